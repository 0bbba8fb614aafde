"""metrics.jsonl read into numpy columns for the curves: the parse behind a first attach.

A panel attaching to a long run reads its whole history once. The curves need a few numbers
per step (step, loss, tokens/s, step time) and two per eval (step, eval loss), so step and
eval lines are decoded by msgspec into a typed struct of those fields alone (unknown keys are
skipped, never built into dicts), then gathered into numpy columns.

A line the typed decoder refuses (another event, a step that is not an int, a value that is
not a number, NaN / Infinity literals, a corrupt line) takes the slow path: `json.loads`, as
`contract.JsonlTail` does; a corrupt line is skipped and counted. The two paths agree on
every kind of line (tests/test_ui_columns.py checks them against each other).

The result, a `MetricsBatch`, keeps the steps' and evals' order with respect to the other
events (a `start` truncates the curves at its resume step) and the full event of the steps
that may become the last step shown (the KPIs read it).

msgspec replaced a hand-written numpy parser here: benchmarks/refresh_cost.py times both on
the same million lines (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

from .. import contract

KINDS = {contract.EVENT_STEP: ("step", "loss", "tokens_per_s", "step_time_s", "lr", "grad_norm", "time"),  # the curves' fields
         contract.EVENT_EVAL: ("step", "eval_loss")}
FIELDS = KINDS["step"]


def as_float(value: Any) -> float:
    """A curve's value: a number as a float; NaN for null, a bool, a string or anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range
        return math.inf if value > 0 else -math.inf


def kind_of(e: dict[str, Any]) -> str | None:
    """"step" or "eval" for an event the curves use (its step is an int), else None."""
    kind = e.get("event")
    return kind if kind in KINDS and isinstance(e.get("step"), int) else None


class Rows:
    """Events of one kind as columns: `line` (int64, file order) and a float64 array per field
    (NaN where a value is missing or not a number)."""

    def __init__(self, kind: str, line: np.ndarray | None = None, columns: dict[str, np.ndarray] | None = None):
        self.kind = kind
        self.line = np.zeros(0, dtype=np.int64) if line is None else line
        self.columns = columns or {k: np.zeros(0) for k in KINDS[kind]}

    def __len__(self) -> int:
        return len(self.line)

    def __getitem__(self, field: str) -> np.ndarray:
        return self.columns[field]

    @classmethod
    def of_events(cls, kind: str, lines: list[int], events: list[dict[str, Any]]) -> Rows:
        """Rows of events already decoded by json.loads (the slow path), numbers as floats (NaN where missing)."""
        return cls(kind, np.asarray(lines, dtype=np.int64),
                   {k: np.array([as_float(e.get(k)) for e in events], dtype=float) for k in KINDS[kind]})

    @classmethod
    def merged(cls, kind: str, parts: list[Rows]) -> Rows:
        """One Rows of several, in line order (each part in line order)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(kind)
        if len(parts) == 1:
            return parts[0]
        line = np.concatenate([p.line for p in parts])
        order = np.argsort(line, kind="stable")
        return cls(kind, line[order], {k: np.concatenate([p.columns[k] for p in parts])[order]
                                       for k in KINDS[kind]})

    @classmethod
    def joined(cls, kind: str, parts: list[Rows]) -> Rows:
        """One Rows of consecutive parts (lines already numbered for the whole)."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls(kind)
        return cls(kind, np.concatenate([p.line for p in parts]),
                   {k: np.concatenate([p.columns[k] for p in parts]) for k in KINDS[kind]})

    def shifted(self, lines: int) -> Rows:
        """The same rows with their line numbers moved on by `lines`."""
        return Rows(self.kind, self.line + lines, self.columns) if lines else self


def _sort_event(line: int, e: dict, rows: dict[str, tuple[list[int], list[dict]]], others: list) -> None:
    """File event `e` of line `line`: a step or eval into rows[kind], anything else into others."""
    kind = kind_of(e)
    if kind is None:
        others.append((line, e))
    else:
        rows[kind][0].append(line)
        rows[kind][1].append(e)


class MetricsBatch:
    """Events read from metrics.jsonl, the curves' events as columns.

    `steps` and `evals` (Rows): the step and eval events whose step is an int, in file order;
    `line`, `step`, `loss`, `tokens_per_s`, `step_time_s` are the steps' columns. `others`:
    (line, event) for every other event, in file order. `events`: the number of valid events;
    `corrupt_lines`. `step_event(row)`: the full event of a step row (kept for the rows that
    may become the last step: the last one, and the last one before each start).
    """

    def __init__(self, steps: Rows | None = None, evals: Rows | None = None,
                 others: list[tuple[int, dict[str, Any]]] | None = None, events: int = 0,
                 corrupt_lines: int = 0, step_events: dict[int, dict[str, Any]] | None = None):
        self.steps = steps or Rows("step")
        self.evals = evals or Rows("eval")
        self.others = others or []
        self.events = events
        self.corrupt_lines = corrupt_lines
        self._step_events = step_events or {}

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def line(self) -> np.ndarray:
        """The step rows' line numbers."""
        return self.steps.line

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The step rows' columns, by field."""
        return self.steps.columns

    step = property(lambda self: self.steps["step"])
    loss = property(lambda self: self.steps["loss"])
    tokens_per_s = property(lambda self: self.steps["tokens_per_s"])
    step_time_s = property(lambda self: self.steps["step_time_s"])

    def step_event(self, row: int) -> dict[str, Any]:
        """The full step event of a row (read from its line when it was parsed in bulk)."""
        if row < 0:
            row += len(self.steps)
        e = self._step_events.get(row)
        if e is None:  # not kept: what the columns hold
            e = {"event": contract.EVENT_STEP, **{k: float(v[row]) for k, v in self.steps.columns.items()}}
            e["step"] = int(e["step"])
        return e

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> MetricsBatch:
        """A batch of already parsed events (in order)."""
        rows: dict[str, tuple[list[int], list[dict]]] = {k: ([], []) for k in KINDS}
        others = []
        n = 0
        for i, e in enumerate(events):
            n += 1
            _sort_event(i, e, rows, others)
        steps = Rows.of_events("step", *rows["step"])
        kept = _rows_to_keep(steps.line, others)
        return cls(steps, Rows.of_events("eval", *rows["eval"]), others, n, 0,
                   {i: rows["step"][1][i] for i in kept})


def _rows_to_keep(step_lines: np.ndarray, others: list[tuple[int, dict[str, Any]]]) -> set[int]:
    """Step rows that may become the last step shown: the last, and the last before a start."""
    keep = {len(step_lines) - 1} if len(step_lines) else set()
    for line, e in others:
        if e.get("event") == contract.EVENT_START:
            i = int(np.searchsorted(step_lines, line)) - 1
            if i >= 0:
                keep.add(i)
    return keep


def _point_type() -> type:
    """The struct any event line decodes into: its event, its step (an int, or None), and the
    curves' other fields as numbers (None where missing or null); other keys are skipped.
    A value of another type (a string loss, a float step) fails the decode."""
    fields = sorted({f for names in KINDS.values() for f in names} - {"step"})
    return msgspec.defstruct("CurvePoint", [("event", str, ""), ("step", int | None, None),
                                            *[(f, float | None, None) for f in fields]], gc=False)


class BlockParser:
    """Parses blocks of whole lines (as `runs.metrics.MetricsBlocks` yields them) into a
    `MetricsBatch`. Each block's points become columns before the next block is read, so a
    million lines never live as a million objects."""

    def __init__(self) -> None:
        decoder = msgspec.json.Decoder(_point_type())
        self._decode, self._decode_lines = decoder.decode, decoder.decode_lines
        self.bulk_rows = 0  # lines taken by the typed decoder so far (the others went through json.loads)

    def parse(self, blocks: Iterable[bytes]) -> MetricsBatch:
        """Parse `blocks` of whole lines into one MetricsBatch (see the module docstring)."""
        parts: dict[str, list[Rows]] = {k: [] for k in KINDS}
        slow: dict[str, tuple[list[int], list[dict]]] = {k: ([], []) for k in KINDS}
        others: list[tuple[int, dict[str, Any]]] = []
        # The raw line of the last typed step, and of the last one before each start: the
        # rows whose full event the batch keeps (see _rows_to_keep).
        self._last: tuple[int, bytes] | None = None
        self._pinned: dict[int, bytes] = {}
        corrupt = line = 0
        for block in blocks:
            points: dict[str, tuple[list[int], list[Any]]] = {k: ([], []) for k in KINDS}
            n_lines = block.count(b"\n")
            decoded = self._whole_block(block, n_lines)
            if decoded is not None:
                corrupt += self._sort_block(line, block, decoded, points, slow, others)
            else:  # a blank, corrupt or odd line in it: line by line
                for i, raw in enumerate(block.split(b"\n")[:-1]):
                    corrupt += self._line(line + i, raw, points, slow, others)
            line += n_lines
            for kind, (lines, kept) in points.items():
                parts[kind].append(_rows(kind, lines, kept))
        if self._last is not None:
            self._pinned[self._last[0]] = self._last[1]
        steps = Rows.merged("step", [Rows.joined("step", parts["step"]), Rows.of_events("step", *slow["step"])])
        evals = Rows.merged("eval", [Rows.joined("eval", parts["eval"]), Rows.of_events("eval", *slow["eval"])])
        slow_steps = dict(zip(*slow["step"]))
        step_events = {}
        for row in _rows_to_keep(steps.line, others):
            n = int(steps.line[row])
            step_events[row] = slow_steps[n] if n in slow_steps else json.loads(self._pinned[n])
        return MetricsBatch(steps, evals, others, len(steps) + len(evals) + len(others), corrupt, step_events)

    def _whole_block(self, block: bytes, n_lines: int) -> list | None:
        """Every line of the block decoded in one call, or None when one of them does not
        decode (or is blank: decode_lines skips those, which would shift the line numbers)."""
        try:
            decoded = self._decode_lines(block)
        except msgspec.DecodeError:
            return None
        return decoded if len(decoded) == n_lines else None

    def _sort_block(self, first: int, block: bytes, decoded: list, points, slow, others) -> int:
        """File a block whose every line decoded: curve points as they are, other events
        (and a step whose step is null) parsed whole with json.loads. Returns corrupt lines."""
        raws, corrupt = None, 0
        for i, point in enumerate(decoded):
            if point.event in KINDS and point.step is not None:
                points[point.event][0].append(first + i)
                points[point.event][1].append(point)
                continue
            if raws is None:
                raws = block.split(b"\n")
            if point.event == contract.EVENT_START:  # the last step before it may be shown: keep its line
                steps = points["step"][0]
                if steps:
                    self._pinned[steps[-1]] = raws[steps[-1] - first]
                elif self._last is not None:
                    self._pinned[self._last[0]] = self._last[1]
            e = _parse(raws[i])
            if e is None:  # msgspec took it, json.loads does not: corrupt, as JsonlTail says
                corrupt += 1
            else:
                _sort_event(first + i, e, slow, others)
        self.bulk_rows += sum(len(lines) for lines, _ in points.values())
        last_step = points["step"][0]
        if last_step:
            if raws is None:
                raws = block.split(b"\n")
            self._last = (last_step[-1], raws[last_step[-1] - first])
        return corrupt

    def _line(self, line: int, raw: bytes, points, slow, others) -> bool:
        """File one line; True when it is corrupt (not blank, not a JSON object)."""
        try:
            point = self._decode(raw)
        except msgspec.DecodeError:  # not a plain step / eval line: the slow path decides
            point = None
        if point is not None and point.event in KINDS and point.step is not None:
            points[point.event][0].append(line)
            points[point.event][1].append(point)
            if point.event == contract.EVENT_STEP:
                self._last = (line, raw)
            self.bulk_rows += 1
            return False
        e = _parse(raw)
        if e is None:
            return raw.strip() != b""
        if e.get("event") == contract.EVENT_START and self._last is not None:
            self._pinned[self._last[0]] = self._last[1]
        _sort_event(line, e, slow, others)
        return False


def _rows(kind: str, lines: list[int], points: list[Any]) -> Rows:
    """Rows of decoded points (None becomes NaN)."""
    return Rows(kind, np.asarray(lines, dtype=np.int64),
                {k: np.array([getattr(p, k) for p in points], dtype=float) for k in KINDS[kind]})


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None
