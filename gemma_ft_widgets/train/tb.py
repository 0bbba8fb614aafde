"""TensorBoard scalars beside metrics.jsonl (events.out.tfevents.* in the run folder).

Uses tensorboard's own event-file writer (a background thread, no TensorFlow graph), so a
scalar costs a few microseconds. Any failure disables TensorBoard; training never stops for it.
"""

from __future__ import annotations

import sys
import time


class ScalarWriter:
    def __init__(self, logdir: str, flush_secs: float = 5.0):
        self._writer = None
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
            self._writer = EventFileWriter(logdir, flush_secs=flush_secs)
        except Exception as e:  # noqa: BLE001
            print(f"TensorBoard scalars disabled: {type(e).__name__}: {e}", file=sys.stderr)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        if self._writer is None:
            return
        try:
            summary = self._summary_pb2.Summary(value=[
                self._summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                for k, v in values.items() if v is not None])
            self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
        except Exception as e:  # noqa: BLE001
            print(f"TensorBoard scalars disabled: {type(e).__name__}: {e}", file=sys.stderr)
            self._writer = None

    def flush(self) -> None:
        if self._writer is not None:
            try:
                self._writer.flush()
            except Exception:  # noqa: BLE001
                self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001
                pass
            self._writer = None
