"""Stall detection: a RUNNING run that has written nothing for much longer than it ever paused.

The one stall rule: `gemma-ft status` and the panel (runs/status.py) and the notices of the
JupyterLab extension and the panel's banner (notices.py) all use it.

A trainer frozen by SIGSTOP, a hung filesystem or a stuck collective keeps its processes alive,
so the process table says RUNNING forever. The run's own events say otherwise: the threshold
is derived from how it has behaved so far (the longest pause between its events since its
first step: log intervals, evals, checkpoint saves), from the pauses it will make (an eval of
its eval split, log_every steps), and never below MIN_STALL_S. `summary` is a
runs.metrics.MetricsSummary (read by duck type: this module sits below runs/).
"""

from __future__ import annotations

import math
from typing import Any

MIN_STALL_S = 20.0
PAUSE_FACTOR = 5.0  # a stall is this many times the longest pause seen, or expected


def basis(summary: Any, config: dict[str, Any] | None) -> float:
    """The longest pause the run has made between events since its first step, or will make
    (log_every steps, an eval of its eval split), in seconds."""
    cfg = config or {}
    step_s = (summary.last_step or {}).get("step_time_s")
    expected = 0.0
    if isinstance(step_s, (int, float)) and step_s > 0:
        log_every = cfg.get("log_every") if isinstance(cfg.get("log_every"), int) else 1
        expected = max(expected, log_every * step_s)
        eval_examples = (summary.last_data or {}).get("eval_examples") or 0
        batch = cfg.get("batch_size") if isinstance(cfg.get("batch_size"), int) else 1
        if eval_examples:  # a forward pass is cheaper than a train step: a safe bound
            expected = max(expected, math.ceil(eval_examples / max(batch, 1)) * step_s)
    return max(summary.max_gap, expected)


def limit(basis_s: float, factor: float = PAUSE_FACTOR, min_s: float = MIN_STALL_S) -> float:
    """Seconds without an event after which a RUNNING run counts as stalled."""
    return max(min_s, factor * basis_s)


def threshold(summary: Any, config: dict[str, Any] | None) -> float:
    """Seconds without an event after which this RUNNING run counts as stalled (`limit` of `basis`)."""
    return limit(basis(summary, config))


def stalled_for(summary: Any, config: dict[str, Any] | None, now: float) -> tuple[float, float] | None:
    """(seconds since the last event, threshold) when past the threshold, else None."""
    if summary.last_time is None or not summary.stepped:
        return None
    quiet = now - summary.last_time
    limit = threshold(summary, config)
    return (quiet, limit) if quiet > limit else None


def describe(quiet: float, limit: float) -> str:
    """The reason shown for a run stalled for `quiet` seconds past a `limit`."""
    return (f"stalled: no step for {_duration(quiet)} (its longest pause so far, or expected, sets the "
            f"limit at {_duration(limit)}); the trainer may be frozen or waiting on a hung filesystem. "
            "Stop escalates to SIGKILL if it does not answer")


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
