"""TensorBoard scalars beside metrics.jsonl (events.out.tfevents.* in the run folder).

Uses tensorboard's own event-file writer (a background thread, no TensorFlow graph), so a
scalar costs a few microseconds. Any failure disables TensorBoard; training never stops for it.
"""

from __future__ import annotations

import sys
import time


class ScalarWriter:
    """`scalars(step, values)` writes at most one point per `min_interval` seconds: the calls in
    between are folded into the next point as their mean (nothing is dropped). TensorBoard's UI
    samples long series down anyway, and on a step of a few ms a protobuf event per step was a
    measurable share of the loop; metrics.jsonl keeps every step. `force=True` writes now."""

    def __init__(self, logdir: str, flush_secs: float = 5.0, min_interval: float = 0.1):
        self.min_interval = min_interval
        self._last = -1e9
        self._pending: dict[str, list[float]] = {}  # tag -> [sum, count] since the last point
        self._pending_step: int | None = None
        self._writer = None
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
            self._writer = EventFileWriter(logdir, flush_secs=flush_secs)
        except Exception as e:  # noqa: BLE001 - tensorboard is optional: any import or setup failure only disables it
            print(f"TensorBoard scalars disabled: {type(e).__name__}: {e}", file=sys.stderr)

    def scalars(self, step: int, values: dict[str, float | None], force: bool = False) -> None:
        """Fold `values` (None skipped) into the next point, written when `min_interval` has passed or `force`."""
        if self._writer is None:
            return
        for k, v in values.items():
            if v is not None:
                acc = self._pending.setdefault(k, [0.0, 0])
                acc[0] += float(v)
                acc[1] += 1
        self._pending_step = int(step)
        now = time.monotonic()
        if force or now - self._last >= self.min_interval:
            self._last = now
            self._write()

    def _write(self) -> None:
        if not self._pending or self._pending_step is None:
            return
        means, step = {k: s / n for k, (s, n) in self._pending.items()}, self._pending_step
        self._pending, self._pending_step = {}, None
        try:
            summary = self._summary_pb2.Summary(value=[
                self._summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in means.items()])
            self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        except Exception as e:  # noqa: BLE001 - a TensorBoard write must never end training
            print(f"TensorBoard scalars disabled: {type(e).__name__}: {e}", file=sys.stderr)
            self._writer = None

    def flush(self) -> None:
        """Write the pending point and flush the event file to disk."""
        if self._writer is not None:
            self._write()
        if self._writer is not None:
            try:
                self._writer.flush()
            except Exception:  # noqa: BLE001 - a TensorBoard flush must never end training
                self._writer = None

    def close(self) -> None:
        """Write the pending point and close the event file."""
        if self._writer is not None:
            self._write()
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - closing is best effort, at the end of training
                pass
            self._writer = None


class NullWriter:
    """ScalarWriter's interface writing nothing: processes other than 0 of a multi-process run
    (process 0 writes the run's one set of event files)."""

    def scalars(self, step: int, values: dict[str, float | None], force: bool = False) -> None:
        """Nothing: another process writes the run's scalars."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""
