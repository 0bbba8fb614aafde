"""Incremental reading of metrics.jsonl: each refresh costs what was appended, not the file.

Three readers, stdlib only:

* `MetricsReader`: the complete events appended since a byte offset, parsed (a UI poller, a
  status refresh).
* `MetricsBlocks`: the same appended lines as raw bytes, in blocks, for a caller that parses
  them its own way (the panel parses a long history into numpy columns, ui/columns.py).
* `MetricsSummary`: the latest values a status needs (its `latest_events`, a `LatestEvents`, is the
  fold of every kind but step that the panel's curves use too, ui/series.py). A long history is summarised from its
  end (`summary_from_end`), so the status of a run with a million steps reads a few blocks,
  not the whole file; what is appended afterwards is read forward, as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from .. import contract


class MetricsReader:
    """Keeps a byte offset into metrics.jsonl; `read_new()` returns only new complete events.

    For a UI poller: create one per run and call `read_new()` on every tick.
    """

    def __init__(self, run_dir_or_path: str | os.PathLike, offset: int = 0):
        path = os.fspath(run_dir_or_path)
        if os.path.isdir(path):
            path = os.path.join(path, contract.METRICS_NAME)
        self._tail = contract.JsonlTail(path, offset)

    @property
    def path(self) -> str:
        """The metrics.jsonl file read."""
        return self._tail.path

    @property
    def offset(self) -> int:
        """The end of the last complete line read so far."""
        return self._tail.offset

    @property
    def corrupt_lines(self) -> int:
        """Lines read so far that were not a JSON object."""
        return self._tail.corrupt_lines

    def read_new(self) -> list[dict[str, Any]]:
        """The complete events appended since the last call (corrupt lines are counted, not returned)."""
        return self._tail.read_new()

    def skip_to(self, offset: int, corrupt_lines: int = 0) -> None:
        """Continue from `offset` (the end of a complete line), counting `corrupt_lines` more."""
        self._tail.offset = offset
        self._tail.corrupt_lines += corrupt_lines


class MetricsBlocks:
    """The complete lines appended to metrics.jsonl since a byte offset, as raw bytes.

    `read()` yields blocks of whole lines (each ends with a newline, about `block_size` bytes
    or one longer line) and advances `offset` past each block as it is yielded; a partial last
    line is left for the next call. When the file is shorter than the offset (replaced or
    truncated), reading starts over from 0 and `restarted` is set.
    """

    BLOCK_SIZE = 4 << 20

    def __init__(self, path: str | os.PathLike, offset: int = 0):
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, contract.METRICS_NAME)
        self.path = path
        self.offset = offset
        self.restarted = False

    def read(self, block_size: int | None = None) -> Iterator[bytes]:
        """The whole lines appended since `offset`, in blocks (see the class); none when the
        file does not exist."""
        block_size = max(1, int(block_size or self.BLOCK_SIZE))
        self.restarted = False
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < self.offset:  # file replaced or truncated: start over
                self.offset, self.restarted = 0, True
            f.seek(self.offset)
            left = size - self.offset
            carry = b""
            while left > 0:
                data = f.read(min(block_size, left))
                if not data:
                    break
                left -= len(data)
                if carry:
                    data, carry = carry + data, b""
                end = data.rfind(b"\n")
                if end < 0:  # a line longer than the block: keep reading
                    carry = data
                    continue
                if end + 1 < len(data):
                    carry = data[end + 1:]
                    data = data[: end + 1]
                self.offset += len(data)
                yield data


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """The line's event, or None when it is corrupt (not JSON, or not an object)."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def is_step(e: dict[str, Any]) -> bool:
    """A step event the curves and the status use (its step is an int)."""
    return e.get("event") == contract.EVENT_STEP and isinstance(e.get("step"), int)


class LatestEvents:
    """The latest event of each kind that a status or a panel shows, except steps: the one fold
    of them, behind both `MetricsSummary` and the panel's `RunSeries`.

    A start begins an attempt: the previous attempt's final, devices, phase and compile no
    longer describe the run (a resumed run is not FINISHED, nor compiled, until it says so).
    """

    KINDS = (contract.EVENT_START, contract.EVENT_EVAL, contract.EVENT_CHECKPOINT, contract.EVENT_FINAL,
             contract.EVENT_DEVICES, contract.EVENT_DATA, contract.EVENT_COMPILE, contract.EVENT_PHASE)
    OF_ATTEMPT = (contract.EVENT_FINAL, contract.EVENT_DEVICES, contract.EVENT_PHASE, contract.EVENT_COMPILE)

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}

    def feed(self, e: dict[str, Any]) -> str | None:
        """Fold one event in; its kind when it is one of KINDS, else None."""
        kind = e.get("event")
        if kind not in self.KINDS:
            return None
        if kind == contract.EVENT_START:
            for k in self.OF_ATTEMPT:
                self._latest.pop(k, None)
        self._latest[kind] = e
        return kind

    def put(self, kind: str, e: dict[str, Any] | None) -> None:
        """Set the latest `kind` outright (a summary found from the file's end)."""
        if e is None:
            self._latest.pop(kind, None)
        else:
            self._latest[kind] = e

    def __getitem__(self, kind: str) -> dict[str, Any] | None:
        return self._latest.get(kind)


class MetricsSummary:
    """The latest values a status needs, folded from events as they are appended.

    A file of at least `FROM_END_BYTES` read for the first time is summarised from its end
    (see `summary_from_end`); `events` and `reader.corrupt_lines` then count the lines that
    were read, not every line of the file.
    """

    FROM_END_BYTES = 1 << 20
    FROM_END_BLOCK = 1 << 20  # bytes read at a time from the end

    def __init__(self, run_dir: str):
        self.reader = MetricsReader(os.path.join(run_dir, contract.METRICS_NAME))
        self.reset()

    def reset(self) -> None:
        """Forget every folded value (the file is read again from its start)."""
        self.latest_events = LatestEvents()
        self.last_step: dict[str, Any] | None = None
        self.first_time: float | None = None
        self.stepped = False  # a step after the latest start
        self.events = 0
        self.last_time: float | None = None  # of the latest event of any kind
        self.max_gap = 0.0  # longest pause between events since the latest start's first step

    # The latest event of each kind (devices, final and phase: of the latest attempt only).
    last_start = property(lambda self: self.latest_events[contract.EVENT_START])
    last_eval = property(lambda self: self.latest_events[contract.EVENT_EVAL])
    last_checkpoint = property(lambda self: self.latest_events[contract.EVENT_CHECKPOINT])
    last_final = property(lambda self: self.latest_events[contract.EVENT_FINAL])
    last_devices = property(lambda self: self.latest_events[contract.EVENT_DEVICES])
    last_data = property(lambda self: self.latest_events[contract.EVENT_DATA])
    last_phase = property(lambda self: self.latest_events[contract.EVENT_PHASE])

    def refresh(self) -> MetricsSummary:
        """Fold what was appended since the last refresh (or the whole file, from its end when long)."""
        try:
            size = os.path.getsize(self.reader.path)
        except OSError:
            size = 0
        if size < self.reader.offset:  # the file was replaced or truncated: start over
            self.reader = MetricsReader(self.reader.path)
            self.reset()
        if self.reader.offset == 0 and size >= self.FROM_END_BYTES:
            self._from_end()
        before = self.reader.offset
        events = self.reader.read_new()
        if self.reader.offset < before:  # replaced between the size check and the read
            self.reset()
        for e in events:
            self._feed(e)
        return self

    def _from_end(self) -> None:
        try:
            found = summary_from_end(self.reader.path, self.FROM_END_BLOCK)
        except OSError:
            return
        if found is None:
            return
        self.reset()
        for kind in _KINDS:
            if kind != contract.EVENT_STEP:
                self.latest_events.put(kind, found[kind])
        self.last_step, self.first_time = found["step"], found["first_time"]
        self.stepped = found["stepped"]
        self.events = found["events"]
        self.last_time = max((float(e["time"]) for e in (found["start"], found["step"], found["eval"],
                                                         found["checkpoint"], found["final"])
                              if e and isinstance(e.get("time"), (int, float))), default=None)
        self.reader.skip_to(found["offset"], found["corrupt_lines"])

    def _feed(self, e: dict[str, Any]) -> None:
        self.events += 1
        t = e.get("time")
        if isinstance(t, (int, float)):
            if self.first_time is None:
                self.first_time = float(t)
            if self.stepped and self.last_time is not None:  # pauses once stepping (not loading)
                self.max_gap = max(self.max_gap, float(t) - self.last_time)
            self.last_time = float(t)
        if self.latest_events.feed(e) == contract.EVENT_START:
            self.stepped, self.max_gap = False, 0.0
        elif is_step(e):
            self.last_step, self.stepped = e, True

    def value(self, event: str, key: str) -> Any:
        """`key` of the latest `event` ("step", "eval" or "start"), or None."""
        e = {"step": self.last_step, "eval": self.last_eval, "start": self.last_start}[event]
        return None if e is None else e.get(key)


# The kinds a summary from the file's end looks for (the data and compile events are not
# needed by a status); those of LatestEvents.OF_ATTEMPT count only when they follow the last start.
_KINDS = (contract.EVENT_START, contract.EVENT_STEP, contract.EVENT_EVAL, contract.EVENT_CHECKPOINT,
          contract.EVENT_FINAL, contract.EVENT_DEVICES, contract.EVENT_PHASE)
_OF_LAST_ATTEMPT = LatestEvents.OF_ATTEMPT
_TOKENS = {kind: b'"' + kind.encode() + b'"' for kind in _KINDS}


def summary_from_end(path: str | os.PathLike, block_size: int = 1 << 20) -> dict[str, Any] | None:
    """What `MetricsSummary` folds from the whole file, found by reading it from its end.

    The summary needs only the last start, step, eval, checkpoint and final events (a final
    only if it follows the last start) and the time of the first event. Each kind is looked
    for backwards, in blocks: a line is parsed only when it contains the kind's name as a JSON
    string ("step", "eval", ...), so the million step lines between a run's start and its end
    are passed over by `bytes.rfind`, not parsed. A kind that never occurs costs a scan of the
    file for its name, no parsing. Returns None when the file holds no complete line, else a
    dict: start, step, eval, checkpoint, final (events or None), stepped, first_time, offset
    (the end of the last complete line), events and corrupt_lines (of the lines parsed).
    """
    with open(path, "rb") as f:
        # The summary covers the file up to the end of its last complete line.
        end = _last_line_end(f, os.fstat(f.fileno()).st_size, block_size)
        if end < 0:
            return None
        lines = _CountedLines()
        found, block_size = _find_last_events(f, end, block_size, lines)
        first_time = _first_time(f, end, block_size, lines)
    return _summary(found, first_time, end, lines)


def _last_line_end(f: BinaryIO, size: int, block_size: int) -> int:
    """The offset just past the file's last newline, or -1 when it has none."""
    pos = size
    while pos > 0:
        lo = max(0, pos - block_size)
        f.seek(lo)
        i = f.read(pos - lo).rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        pos = lo
    return -1


class _CountedLines:
    """Parses lines by their start offset, counting each line once (events, corrupt lines)."""

    def __init__(self) -> None:
        self.parsed: set[int] = set()  # line starts parsed (so no line is counted twice)
        self.events = 0
        self.corrupt_lines = 0

    def parse_at(self, start: int, line: bytes) -> dict | None:
        e = _parse_line(line) if line.strip() else None
        if start not in self.parsed:
            self.parsed.add(start)
            if e is not None:
                self.events += 1
            elif line.strip():
                self.corrupt_lines += 1
        return e


_Found = dict[str, tuple[int, dict] | None]  # kind -> (line start, event) of its last occurrence


def _still_wanted(found: _Found) -> list[str]:
    """The kinds not found yet; a final, devices or phase before the last start does not count."""
    want = [k for k in _KINDS if found[k] is None]
    if found["start"] is not None:
        want = [k for k in want if k not in _OF_LAST_ATTEMPT]
    return want


def _find_last_events(f: BinaryIO, end: int, block_size: int,
                      lines: _CountedLines) -> tuple[_Found, int]:
    """The last event of each kind before `end`, read backwards block by block (each block
    starts at a line start, or at 0); also the block size, widened for very long lines."""
    found: _Found = {k: None for k in _KINDS}
    hi = end
    while hi > 0:
        want = _still_wanted(found)
        if not want:
            break
        lo = max(0, hi - block_size)
        f.seek(lo)
        block = f.read(hi - lo)
        if lo > 0:
            cut = block.find(b"\n")
            if cut + 1 >= len(block):  # no whole line in the block: widen it
                block_size *= 2
                continue
            block, lo = block[cut + 1:], lo + cut + 1
        _find_in_block(block, lo, want, found, lines)
        hi = lo
    return found, block_size


def _find_in_block(block: bytes, lo: int, want: list[str], found: _Found,
                   lines: _CountedLines) -> None:
    """Fills `found` with the last line of each wanted kind in `block` (at offset `lo`)."""
    stop = len(block)  # look at lines that start before `stop`
    while stop > 0 and want:
        at = max(block.rfind(_TOKENS[k], 0, stop) for k in want)
        if at < 0:
            break
        a = block.rfind(b"\n", 0, at) + 1
        b = block.find(b"\n", at)
        e = lines.parse_at(lo + a, block[a: b if b >= 0 else len(block)])
        if e is not None:
            kind = e.get("event")
            if kind in want and (kind != contract.EVENT_STEP or is_step(e)):
                found[kind] = (lo + a, e)
                want.remove(kind)
                if kind == contract.EVENT_START:
                    want[:] = [k for k in want if k not in _OF_LAST_ATTEMPT]
        stop = a


def _first_time(f: BinaryIO, end: int, block_size: int, lines: _CountedLines) -> float | None:
    """The time of the first event that has one, read forwards from the beginning."""
    pos = 0
    while pos < end:
        f.seek(pos)
        block = f.read(min(block_size, end - pos))
        cut = block.rfind(b"\n")
        if cut < 0:
            block_size *= 2
            continue
        block = block[: cut + 1]
        a = 0
        while a < len(block):
            b = block.find(b"\n", a)
            e = lines.parse_at(pos + a, block[a:b])
            if e is not None and isinstance(e.get("time"), (int, float)):
                return float(e["time"])
            a = b + 1
        pos += len(block)
    return None


def _summary(found: _Found, first_time: float | None, end: int,
             lines: _CountedLines) -> dict[str, Any]:
    """The dict `summary_from_end` returns; events of the last attempt only where they must be."""
    start, step = found["start"], found["step"]

    def of_last_attempt(kind: str) -> dict | None:
        hit = found[kind]
        if hit is None or (start is not None and hit[0] < start[0]):
            return None
        return hit[1]

    def event(kind: str) -> dict | None:
        return None if found[kind] is None else found[kind][1]

    return {
        "start": event("start"), "step": event("step"), "eval": event("eval"),
        "checkpoint": event("checkpoint"), "final": of_last_attempt("final"),
        "devices": of_last_attempt("devices"),
        contract.EVENT_PHASE: of_last_attempt(contract.EVENT_PHASE),
        "stepped": step is not None and (start is None or step[0] > start[0]),
        "first_time": first_time, "offset": end,
        "events": lines.events, "corrupt_lines": lines.corrupt_lines,
    }
