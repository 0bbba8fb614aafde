"""What the run table shows that a RunStatus does not hold: when the run first started, its
wall time across every attempt (status.log), and its best eval loss (metrics.jsonl).

Both are cheap to keep up to date: status.log is a few lines per attempt, and `BestEval`
reads only what was appended to metrics.jsonl since its last call, parsing just the lines
that name an eval event (a million step lines are passed over by bytes.find).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time

from .. import contract
from .metrics import MetricsBlocks, _parse_line

ENDS = ("FINISHED", "ABORTED", "FAILED", "ORPHANED")
_EVAL = b'"eval"'


def attempts(run_dir: str, now: float | None = None) -> tuple[float | None, float | None, int]:
    """(first start as epoch seconds, wall seconds summed over attempts, attempts) from
    status.log: each attempt runs from its first STARTING line to the next ended state; one
    still open counts up to `now` (default: the clock)."""
    try:
        with open(os.path.join(run_dir, contract.STATUS_LOG_NAME), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None, 0
    first = opened = None
    total, n = 0.0, 0
    for line in lines:
        stamp, _, rest = line.partition(" ")
        state = rest.split(" ", 1)[0]
        t = _epoch(stamp)
        if t is None:
            continue
        if state == "STARTING" and opened is None:
            opened, n = t, n + 1
            first = t if first is None else first
        elif state in ENDS and opened is not None:
            total += max(0.0, t - opened)
            opened = None
    if opened is not None:
        total += max(0.0, (time.time() if now is None else now) - opened)
    return first, (total if n else None), n


def _epoch(stamp: str) -> float | None:
    """Epoch seconds of contract.utc_now()'s format. Not status.parse_iso: runs/status.py uses
    this module (for RunStatus.wall_s), and fromisoformat (Python >= 3.11) beats strptime."""
    try:
        t = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.UTC)).timestamp()


class BestEval:
    """The lowest finite eval loss logged so far (and its step), read incrementally."""

    def __init__(self, run_dir: str):
        self._blocks = MetricsBlocks(os.path.join(run_dir, contract.METRICS_NAME))
        self.loss: float | None = None
        self.step: int | None = None

    def unread(self) -> int:
        """Bytes appended since the last read (what the next read costs)."""
        try:
            return max(0, os.path.getsize(self._blocks.path) - self._blocks.offset)
        except OSError:
            return 0

    def read(self) -> float | None:
        """Read what was appended since the last call; returns the lowest eval loss so far (None: none yet). Starts over
        when the metrics file was replaced."""
        for block in self._blocks.read():
            if self._blocks.restarted:  # the file was replaced: start over
                self.loss = self.step = None
            at = block.find(_EVAL)
            while at >= 0:
                a = block.rfind(b"\n", 0, at) + 1
                b = block.find(b"\n", at)
                e = _parse_line(block[a:b])
                if e is not None and e.get("event") == "eval":
                    v = e.get("eval_loss")
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        if self.loss is None or v < self.loss:
                            self.loss, self.step = float(v), e.get("step")
                at = block.find(_EVAL, b + 1)
        return self.loss
