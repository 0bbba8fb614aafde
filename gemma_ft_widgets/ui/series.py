"""A run's curves, folded from its metrics events as they are read (appended only).

This is a cache of what metrics.jsonl holds, rebuilt from offset 0 whenever a panel starts
watching a run, so a new panel (or a new kernel) shows the whole history. `RunSeries.read()`
reads what was appended since the last read; a long history is parsed into columns in bulk
(ui/columns.py), so a first attach to a million steps is one pass over the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import contract
from ..runs.metrics import LatestEvents, MetricsBlocks
from .columns import BlockParser, MetricsBatch, as_float

_uids = itertools.count(1)


class Growable:
    """An append-only float array with amortised O(1) appends and a numpy view."""

    def __init__(self, capacity: int = 256):
        self._data = np.empty(capacity, dtype=float)
        self._n = 0

    def append(self, value: Any) -> None:
        """Append one value (as a float; NaN when it is not a number)."""
        if self._n == len(self._data):
            self._data = np.resize(self._data, 2 * len(self._data))
        self._data[self._n] = as_float(value)
        self._n += 1

    def extend(self, values: list | np.ndarray) -> None:
        """Append several values (as floats)."""
        if len(values) == 0:
            return
        need = self._n + len(values)
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data)), dtype=float)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        if isinstance(values, np.ndarray):
            self._data[self._n:need] = values
        else:
            self._data[self._n:need] = [as_float(v) for v in values]
        self._n = need

    def truncate(self, n: int) -> None:
        """Keep only the first `n` values."""
        self._n = max(0, min(n, self._n))

    @property
    def values(self) -> np.ndarray:
        """A view of the values so far (valid until the next append)."""
        return self._data[: self._n]

    def __len__(self) -> int:
        return self._n


class RunSeries:
    """Train loss, eval loss, throughput, learning rate, gradient norm and wall time against
    step, plus the latest step event.

    `version` is bumped whenever the curves change; `generation` whenever points were taken
    away (a resume truncating the curves, a replaced file), so a curve of the same generation
    is the previous one with points appended (what the incremental decimation relies on).
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.uid = next(_uids)  # tells series apart (caches of drawn curves key on it)
        self.offset = 0  # byte offset into metrics.jsonl up to which events were folded in
        self._parser = BlockParser()
        self._clear()
        self.generation = 0
        self.version = 0  # bumped whenever the curves change

    def _clear(self) -> None:
        self.step = Growable()
        self.loss = Growable()
        self.tokens_per_s = Growable()
        self.step_time = Growable()
        self.lr = Growable()
        self.grad_norm = Growable()  # NaN for a run logged before the trainer wrote it
        self.time = Growable()  # the step events' wall-clock times
        self.eval_step = Growable()
        self.eval_loss = Growable()
        self.last_step: dict[str, Any] | None = None
        self.latest_events = LatestEvents()  # the same fold as a status's (runs/metrics.py)
        self.samples: list[dict[str, Any]] = []  # `sample` events, as written (ui/samples_view.py)
        self.events = 0
        self.corrupt_lines = 0

    # The latest event of each kind (compile, final and phase: of the latest attempt only).
    last_start = property(lambda self: self.latest_events[contract.EVENT_START])
    last_data = property(lambda self: self.latest_events[contract.EVENT_DATA])
    last_compile = property(lambda self: self.latest_events[contract.EVENT_COMPILE])
    final = property(lambda self: self.latest_events[contract.EVENT_FINAL])
    last_phase = property(lambda self: self.latest_events[contract.EVENT_PHASE])

    def __len__(self) -> int:
        return len(self.step)

    def read(self, path: str | None = None) -> bool:
        """Fold in what was appended to metrics.jsonl since `offset` (`path`: the file or the
        run folder, else `run_dir`). Reads only appended bytes. True when a curve changed."""
        reader = MetricsBlocks(path or self.run_dir, self.offset)
        batch = self._parser.parse(reader.read())
        if reader.restarted:  # the file was replaced: its history is the new file's
            self._clear()
            self.generation += 1
            self.version += 1
        self.offset = reader.offset
        self.corrupt_lines += batch.corrupt_lines
        return self.extend(batch) or reader.restarted

    def extend(self, events: Iterable[dict[str, Any]] | MetricsBatch) -> bool:
        """Fold new events (dicts in file order, or a MetricsBatch) in. True when a curve changed."""
        batch = events if isinstance(events, MetricsBatch) else MetricsBatch.from_events(events)
        changed = False
        done = [0, 0]  # step rows and eval rows folded so far
        for line, e in batch.others:
            kind = e.get("event")
            if kind == contract.EVENT_START:
                changed |= self._flush(batch, done, line)
                resume = e.get("resume_step")
                # Samples past the resumed checkpoint belong to weights that were not kept.
                self.samples = [x for x in self.samples if isinstance(resume, int) and x["step"] <= resume]
                # A resumed attempt restarts from its checkpoint: drop the steps the previous
                # attempt logged past it, so the curve stays a function of step.
                if isinstance(resume, int):
                    changed |= self._truncate_after(resume)
                elif len(self.step):  # a fresh start in an existing file: start over
                    changed |= self._truncate_after(-1)
            elif kind == contract.EVENT_SAMPLE and isinstance(e.get("step"), int):
                self.samples.append(e)
            self.latest_events.feed(e)
        changed |= self._flush(batch, done, None)
        self.events += batch.events
        if changed:
            self.version += 1
        return changed

    def _flush(self, batch: MetricsBatch, done: list[int], line: int | None) -> bool:
        """Fold the batch's steps and evals before `line` (None: all) from where `done` says."""
        steps, evals = batch.steps, batch.evals
        a, b = done
        a2 = len(steps) if line is None else int(np.searchsorted(steps.line, line))
        b2 = len(evals) if line is None else int(np.searchsorted(evals.line, line))
        done[:] = [a2, b2]
        if a2 > a:
            self.step.extend(steps["step"][a:a2])
            self.loss.extend(steps["loss"][a:a2])
            self.tokens_per_s.extend(steps["tokens_per_s"][a:a2])
            self.step_time.extend(steps["step_time_s"][a:a2])
            self.lr.extend(steps["lr"][a:a2])
            self.grad_norm.extend(steps["grad_norm"][a:a2])
            self.time.extend(steps["time"][a:a2])
            self.last_step = batch.step_event(a2 - 1)
        if b2 > b:
            self.eval_step.extend(evals["step"][b:b2])
            self.eval_loss.extend(evals["eval_loss"][b:b2])
        return a2 > a or b2 > b

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

        a = cut(self.step, self.loss, self.tokens_per_s, self.step_time, self.lr, self.grad_norm, self.time)
        b = cut(self.eval_step, self.eval_loss)
        if a and len(self.step) == 0:
            self.last_step = None
        if a or b:
            self.generation += 1
        return a or b

    # -- derived KPIs -----------------------------------------------------------------------
    def recent_step_time(self, window: int = 20) -> float | None:
        """Median seconds per step over the last `window` steps (robust to a slow eval)."""
        v = self.step_time.values[-window:]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else None

    def eta_s(self, max_steps: int | None) -> float | None:
        """Seconds left to `max_steps` at the recent step time; None when that cannot be told."""
        if not max_steps or self.last_step is None:
            return None
        per = self.recent_step_time()
        if per is None:
            return None
        return max(0, max_steps - int(self.last_step["step"])) * per

    def latest(self, key: str) -> Any:
        """The value of `key` in the last step event, or None."""
        return None if self.last_step is None else self.last_step.get(key)
