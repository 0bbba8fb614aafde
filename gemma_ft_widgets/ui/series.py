"""A run's curves, folded from its metrics events as they are read (appended only).

This is a cache of what metrics.jsonl holds, rebuilt from offset 0 whenever a panel starts
watching a run, so a new panel (or a new kernel) shows the whole history.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Growable:
    """An append-only float array with amortised O(1) appends and a numpy view."""

    def __init__(self, capacity: int = 256):
        self._data = np.empty(capacity, dtype=float)
        self._n = 0

    def append(self, value: Any) -> None:
        if self._n == len(self._data):
            self._data = np.resize(self._data, 2 * len(self._data))
        self._data[self._n] = _float(value)
        self._n += 1

    def extend(self, values: list) -> None:
        if not values:
            return
        need = self._n + len(values)
        if need > len(self._data):
            self._data = np.resize(self._data, max(need, 2 * len(self._data)))
        self._data[self._n:need] = [_float(v) for v in values]
        self._n = need

    def truncate(self, n: int) -> None:
        self._n = max(0, min(n, self._n))

    @property
    def values(self) -> np.ndarray:
        return self._data[: self._n]

    def __len__(self) -> int:
        return self._n


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


class RunSeries:
    """Train loss, eval loss and throughput against step, plus the latest step event."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.offset = 0  # byte offset into metrics.jsonl (RunManager.metrics' `since`)
        self.step = Growable()
        self.loss = Growable()
        self.tokens_per_s = Growable()
        self.step_time = Growable()
        self.eval_step = Growable()
        self.eval_loss = Growable()
        self.last_step: dict[str, Any] | None = None
        self.last_start: dict[str, Any] | None = None
        self.last_data: dict[str, Any] | None = None
        self.last_compile: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.events = 0
        self.version = 0  # bumped whenever the curves change

    def __len__(self) -> int:
        return len(self.step)

    def extend(self, events: list[dict[str, Any]]) -> bool:
        """Fold new events in. True when a curve changed."""
        changed = False
        steps: list = []  # collected, then appended in bulk (a re-attach reads a million steps)
        evals: list = []
        for e in events:
            self.events += 1
            kind = e.get("event")
            if kind == "step":
                if isinstance(e.get("step"), int):
                    steps.append(e)
            elif kind == "eval":
                if isinstance(e.get("step"), int):
                    evals.append(e)
            elif kind == "start":
                changed |= self._flush(steps, evals)
                steps, evals = [], []
                self.last_start, self.final = e, None
                resume = e.get("resume_step")
                # A resumed attempt restarts from its checkpoint: drop the steps the previous
                # attempt logged past it, so the curve stays a function of step.
                if isinstance(resume, int):
                    changed |= self._truncate_after(resume)
                elif len(self.step):  # a fresh start in an existing file: start over
                    changed |= self._truncate_after(-1)
            elif kind == "data":
                self.last_data = e
            elif kind == "compile":
                self.last_compile = e
            elif kind == "final":
                self.final = e
        changed |= self._flush(steps, evals)
        if changed:
            self.version += 1
        return changed

    def _flush(self, steps: list[dict[str, Any]], evals: list[dict[str, Any]]) -> bool:
        if steps:
            self.step.extend([e["step"] for e in steps])
            self.loss.extend([e.get("loss") for e in steps])
            self.tokens_per_s.extend([e.get("tokens_per_s") for e in steps])
            self.step_time.extend([e.get("step_time_s") for e in steps])
            self.last_step = steps[-1]
        if evals:
            self.eval_step.extend([e["step"] for e in evals])
            self.eval_loss.extend([e.get("eval_loss") for e in evals])
        return bool(steps or evals)

    def _truncate_after(self, step: int) -> bool:
        def cut(steps: Growable, *others: Growable) -> bool:
            v = steps.values
            n = int(np.searchsorted(v, step, side="right")) if len(v) and np.all(np.diff(v) >= 0) \
                else int(np.sum(v <= step))
            if n == len(v):
                return False
            for g in (steps, *others):
                g.truncate(n)
            return True

        a = cut(self.step, self.loss, self.tokens_per_s, self.step_time)
        b = cut(self.eval_step, self.eval_loss)
        if a and len(self.step) == 0:
            self.last_step = None
        return a or b

    # -- derived KPIs -----------------------------------------------------------------------
    def recent_step_time(self, window: int = 20) -> float | None:
        """Median seconds per step over the last `window` steps (robust to a slow eval)."""
        v = self.step_time.values[-window:]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else None

    def eta_s(self, max_steps: int | None) -> float | None:
        if not max_steps or self.last_step is None:
            return None
        per = self.recent_step_time()
        if per is None:
            return None
        return max(0, max_steps - int(self.last_step["step"])) * per

    def latest(self, key: str) -> Any:
        return None if self.last_step is None else self.last_step.get(key)
