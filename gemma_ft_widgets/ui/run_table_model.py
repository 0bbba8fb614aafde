"""The run table's state, without widgets: rows built from RunStatuses, the sort key, the
text and state filters, the page, the selection, and what a selection compares (the curves
to overlay, the config keys that differ). ui/run_table.py draws it; tests drive it directly.

Rows of ended runs are built once: RunManager.runs() hands back the very same RunStatus for
a run that has not changed (runs/status.py's cache), and a row is rebuilt only when its
status object is a new one, or its note was edited here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import traitlets as t

from ..config import split_tags
from ..runs import notes
from ..runs.run_facts import BestEval, attempts
from ..runs.status import parse_iso, read_config
from . import fmt

ALL_STATES = "all"
STATES = ("RUNNING", "STARTING", "STOPPING", "FINISHED", "ABORTED", "FAILED", "ORPHANED")
PAGE_SIZE = 15
FEW = 16  # at most this many new statuses in a poll: only their rows are rebuilt
# A metrics file with more unread bytes than this has its best eval read at a later poll, one
# run per poll: a panel's first attach to a long history does not wait for that pass too.
LAZY_BYTES = 16 << 20


@dataclasses.dataclass
class RunRow:
    """One run as the table shows it, with `search`, the text the filter matches."""

    run_dir: str
    name: str
    state: str
    model: str = ""
    method: str = ""
    lr: float | None = None
    batch: int | None = None
    final_eval: float | None = None
    best_eval: float | None = None
    step: int | None = None
    max_steps: int | None = None
    wall_s: float | None = None
    attempts: int = 0
    started: float | None = None  # epoch seconds of the first attempt's start
    tags: tuple[str, ...] = ()
    note: str = ""
    config: dict = dataclasses.field(default_factory=dict)

    search: str = ""  # what the text filter searches (lower case), made from the fields above

    def __post_init__(self) -> None:
        self.search = " ".join([self.name, self.state, self.model, self.method, *self.tags, self.note]).lower()


def _num(x: Any) -> float | None:
    """A number to sort by; None for anything else (a config may hold a text)."""
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else None


# Columns: (key, title, width in px, sort value of a row). A None sort value sorts last.
COLUMNS: tuple[tuple[str, str, int, Callable[[RunRow], Any]], ...] = (
    ("name", "Run", 200, lambda r: r.name),
    ("state", "State", 96, lambda r: r.state),
    ("model", "Model", 90, lambda r: r.model),
    ("method", "Method", 72, lambda r: r.method),
    ("lr", "LR", 64, lambda r: _num(r.lr)),
    ("batch", "Batch", 52, lambda r: _num(r.batch)),
    ("final_eval", "Eval loss", 76, lambda r: _num(r.final_eval)),
    ("best_eval", "Best eval", 76, lambda r: _num(r.best_eval)),
    ("steps", "Steps", 84, lambda r: _num(r.step)),
    ("wall", "Wall time", 92, lambda r: _num(r.wall_s)),
    ("started", "Started", 128, lambda r: _num(r.started)),
    ("tags", "Tags", 110, lambda r: ",".join(r.tags) or None),
    ("note", "Note", 170, lambda r: r.note or None),
)
SORT_VALUE = {key: fn for key, _, _, fn in COLUMNS}


def tags_of(config: dict | None) -> tuple[str, ...]:
    """The config's tags (a list, or a comma-separated text), () for a config without any."""
    raw = (config or {}).get("tags")
    if isinstance(raw, str):  # TrainingConfig.tags: "baseline, lr-sweep"
        return tuple(split_tags(raw))
    if not isinstance(raw, (list, tuple)):
        return ()
    return tuple(s for s in (str(x).strip() for x in raw if x is not None) if s)


def _method(config: dict) -> str:
    method = str(config.get("method") or "")
    rank = config.get("lora_rank")
    return f"{method} r{rank}" if method == "lora" and rank else method


def build_row(status: Any, config: dict | None, best: float | None, note: str,
              now: float | None = None) -> RunRow:
    """The row of a run from its status, config, best eval loss and note (several attempts: their
    spans from status.log)."""
    config = config or {}
    run_dir = status.run_dir or ""
    if (status.attempt or 1) > 1:  # resumed: the attempts' spans, from status.log
        first, wall, n = attempts(run_dir, now)
    else:  # one attempt: the status has its start and duration (one file read less per row)
        first, wall, n = parse_iso(status.started_at), status.elapsed_s, 1 if status.started_at else 0
    return RunRow(
        run_dir=run_dir, name=status.run_name or os.path.basename(run_dir), state=fmt.state_value(status.state),
        model=str(config.get("model") or status.model or ""), method=_method(config),
        lr=config.get("learning_rate"), batch=config.get("batch_size"),
        final_eval=status.eval_loss, best_eval=best, step=status.step,
        max_steps=status.max_steps, wall_s=wall if wall is not None else status.elapsed_s, attempts=n,
        started=first if first is not None else parse_iso(status.started_at),
        tags=tags_of(config), note=note, config=config)


def sort_rows(rows: Sequence[RunRow], key: str, descending: bool) -> list[RunRow]:
    """Rows by column `key` (ties by start time); rows without a value last. The values are
    taken once per row and sorted as tuples (no key function: a poll of 1,000 rows re-sorts
    in C)."""
    fn = SORT_VALUE[key]
    have, missing = [], []
    for i, r in enumerate(rows):
        v = fn(r)
        if v is None:
            missing.append(r)
        else:
            have.append((v, r.started or 0.0, i))
    have.sort(reverse=descending)
    return [rows[i] for _, _, i in have] + missing


def filter_rows(rows: Sequence[RunRow], text: str, state: str) -> list[RunRow]:
    """Rows in `state` (ALL_STATES: any) whose text holds every word of `text`."""
    words = text.lower().split()
    any_state = state in ("", ALL_STATES)
    if not words and any_state:
        return list(rows)
    return [r for r in rows if (any_state or r.state == state) and all(w in r.search for w in words)]


def config_diff(configs: dict[str, dict]) -> list[tuple[str, list[Any]]]:
    """(key, [value per run]) for each config key whose values differ between the runs
    (a key a run lacks counts as None), keys sorted."""
    keys = sorted({k for c in configs.values() for k in c})
    out = []
    for k in keys:
        values = [c.get(k) for c in configs.values()]
        if any(v != values[0] for v in values[1:]):
            out.append((k, values))
    return out


def overlay_series(run_dirs: Sequence[str], read: Callable[[str], Any]) -> list[tuple]:
    """(label, train steps, train loss, eval steps, eval loss) per run; `read(run_dir)` gives
    its RunSeries read up to now (None or an exception of RunError's kind skips the run)."""
    out = []
    for run_dir in run_dirs:
        series = read(run_dir)
        if series is None:
            continue
        out.append((os.path.basename(run_dir), series.step.values, series.loss.values,
                    series.eval_step.values, series.eval_loss.values))
    return out


class RunTableModel(t.HasTraits):
    """The table's view state. `set_runs(statuses)` feeds it; `rows` (all, sorted and
    filtered), `page_rows` and `selected` are what the view shows."""

    sort_key = t.Unicode("started", help="a COLUMNS key")
    descending = t.Bool(True)
    text_filter = t.Unicode("", help="rows whose text holds every word (name, state, model, method, tags, note)")
    state_filter = t.Unicode(ALL_STATES)
    page = t.Int(0)
    page_size = t.Int(PAGE_SIZE)
    selected = t.Tuple(help="run folders, in the order they were selected")
    confirming_delete = t.Unicode("", help="the run folder a delete waits to be confirmed for")
    version = t.Int(0, help="bumped whenever the rows shown may have changed")

    def __init__(self, on_delete: Callable[[str], None] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.on_delete = on_delete
        self._rows: dict[str, tuple[Any, RunRow]] = {}  # run folder -> (status it was built from, row)
        self._best: dict[str, BestEval] = {}
        self._pending: set[str] = set()  # runs whose best eval is read at a later poll
        self._listed: Any = None
        self._all: list[RunRow] = []
        self.rows: list[RunRow] = []  # sorted and filtered
        self._at_all: dict[str, int] = {}  # run folder -> index in _all
        self._at_rows: dict[str, int] = {}  # ... and in rows
        self.observe(self._view_changed, ["sort_key", "descending", "text_filter", "state_filter"])
        self.observe(self._clamp, ["page", "page_size"])

    # -- feeding ----------------------------------------------------------------------------
    def set_runs(self, statuses: Sequence[Any]) -> None:
        """Rows for these runs; rows of statuses seen before are reused."""
        if self._pending:
            self._fill_one()
        if statuses is self._listed:  # RunManager.runs() gave the very same list: nothing changed
            return
        prev, self._listed = self._listed, statuses
        if prev is not None and len(prev) == len(statuses) and self._few_changed(prev, statuses):
            return
        old, rows, rebuilt = self._rows, {}, []
        for st in statuses:
            if not st.run_dir:
                continue
            hit = old.get(st.run_dir)
            if hit is None or hit[0] is not st:
                hit = (st, self._build(st))
                rebuilt.append(st.run_dir)
            rows[st.run_dir] = hit
        self._rows = rows
        for gone in set(old) - set(rows):
            self._best.pop(gone, None)
            self._pending.discard(gone)
        keep = tuple(d for d in self.selected if d in rows)
        if keep != self.selected:
            self.selected = keep
        if self.confirming_delete and self.confirming_delete not in rows:
            self.confirming_delete = ""
        if len(rows) == len(old) and self._in_place(old, rebuilt):
            return
        self._all = [rows[d][1] for d in rows]
        self._view_changed()

    def _few_changed(self, prev: Sequence[Any], statuses: Sequence[Any]) -> bool:
        """The same runs, a few with a new status (a poll while runs are in progress): rebuild
        those rows only. False when this does not apply (set_runs then does it all)."""
        changed = [i for i, (a, b) in enumerate(zip(statuses, prev)) if a is not b]
        if len(changed) > FEW or not all(statuses[i].run_dir == prev[i].run_dir and statuses[i].run_dir in self._rows
                                         for i in changed):
            return False
        old, rebuilt = {}, []
        for i in changed:
            st = statuses[i]
            old[st.run_dir] = self._rows[st.run_dir]
            self._rows[st.run_dir] = (st, self._build(st))
            rebuilt.append(st.run_dir)
        if not self._in_place(old, rebuilt):
            self._all = [row for _, row in self._rows.values()]
            self._view_changed()
        return True

    def _in_place(self, old: dict, rebuilt: list[str]) -> bool:
        """Put the rebuilt rows where their old ones were, when that keeps the order and the
        filter (a live run's step and loss changed, not its sort value): a poll with a run in
        progress then costs what changed, not a sort of every row."""
        fn = SORT_VALUE[self.sort_key]
        text, state = self.text_filter, self.state_filter
        moves = []
        for d in rebuilt:
            was, now = old.get(d), self._rows[d][1]
            if was is None or d not in self._at_all:
                return False
            was = was[1]
            if (fn(was), was.started) != (fn(now), now.started) or \
                    bool(filter_rows([was], text, state)) != bool(filter_rows([now], text, state)):
                return False
            moves.append((d, now))
        for d, now in moves:
            self._all[self._at_all[d]] = now
            i = self._at_rows.get(d)
            if i is not None:
                self.rows[i] = now
        if moves:
            self.version += 1
        return True

    def _build(self, st: Any) -> RunRow:
        run_dir = st.run_dir
        best = self._best.get(run_dir)
        if best is None:
            best = self._best[run_dir] = BestEval(run_dir)
        if run_dir in self._pending or (best.loss is None and best.unread() > LAZY_BYTES):
            self._pending.add(run_dir)
            value = None
        else:
            value = best.read()
        return build_row(st, read_config(run_dir), value, notes.read_note(run_dir))

    def _fill_one(self) -> None:
        """Read the best eval of one run left for later (see LAZY_BYTES)."""
        run_dir = self._pending.pop()
        best, hit = self._best.get(run_dir), self._rows.get(run_dir)
        if best is None or hit is None:
            return
        self._rows[run_dir] = (hit[0], dataclasses.replace(hit[1], best_eval=best.read()))
        self._all = [row for _, row in self._rows.values()]
        self._view_changed()

    def row(self, run_dir: str) -> RunRow | None:
        """The row of `run_dir`, or None when the table has no such run."""
        hit = self._rows.get(run_dir)
        return None if hit is None else hit[1]

    # -- view state ------------------------------------------------------------------------
    def _view_changed(self, change=None) -> None:
        self.rows = sort_rows(filter_rows(self._all, self.text_filter, self.state_filter),
                              self.sort_key, self.descending)
        self._at_all = {r.run_dir: i for i, r in enumerate(self._all)}
        self._at_rows = {r.run_dir: i for i, r in enumerate(self.rows)}
        self._clamp()
        self.version += 1

    def _clamp(self, change=None) -> None:
        last = max(0, (len(self.rows) - 1) // max(1, self.page_size))
        if not 0 <= self.page <= last:
            self.page = min(max(0, self.page), last)

    @property
    def pages(self) -> int:
        """The number of pages of the filtered rows (at least 1)."""
        return max(1, -(-len(self.rows) // max(1, self.page_size)))

    @property
    def page_rows(self) -> list[RunRow]:
        """The rows of the current page."""
        i = self.page * self.page_size
        return self.rows[i: i + self.page_size]

    def sort_by(self, key: str) -> None:
        """A header click: sort by `key`; the same key again reverses the order."""
        if key not in SORT_VALUE:
            raise ValueError(f"unknown column {key!r}; one of {', '.join(SORT_VALUE)}")
        if key == self.sort_key:
            self.descending = not self.descending
        else:
            with self.hold_trait_notifications():
                self.sort_key = key
                self.descending = key in ("started", "steps", "wall", "lr", "batch")

    def toggle(self, run_dir: str, on: bool) -> None:
        """Select or deselect one run (a run the table does not hold is never selected)."""
        if on and run_dir not in self.selected and run_dir in self._rows:
            self.selected = self.selected + (run_dir,)
        elif not on and run_dir in self.selected:
            self.selected = tuple(d for d in self.selected if d != run_dir)

    # -- comparing --------------------------------------------------------------------------
    def selected_configs(self) -> dict[str, dict]:
        """{run name: config} of the selected runs."""
        return {os.path.basename(d): self._rows[d][1].config for d in self.selected if d in self._rows}

    def diff(self) -> list[tuple[str, list[Any]]]:
        """The config keys that differ between the selected runs (`config_diff`); [] for fewer than two."""
        return config_diff(self.selected_configs()) if len(self.selected) >= 2 else []

    # -- a run's note, CSV and deletion ----------------------------------------------------
    def set_note(self, run_dir: str, text: str) -> str:
        """Store the note in the run folder (RunError when it cannot be) and show it."""
        stored = notes.write_note(run_dir, text)
        hit = self._rows.get(run_dir)
        if hit is not None:
            self._rows[run_dir] = (hit[0], dataclasses.replace(hit[1], note=stored))
            self._all = [self._rows[d][1] for d in self._rows]
            self._view_changed()
        return stored

    def request_delete(self, run_dir: str) -> None:
        """Ask for confirmation before deleting `run_dir` (a run not in the table asks nothing)."""
        self.confirming_delete = run_dir if run_dir in self._rows else ""

    def cancel_delete(self) -> None:
        """Drop the delete that waits for confirmation."""
        self.confirming_delete = ""

    def confirm_delete(self) -> str:
        """Hand the run waiting for confirmation to `on_delete` (the panel deletes it, in a
        worker, through RunManager.delete, which refuses a live run)."""
        run_dir, self.confirming_delete = self.confirming_delete, ""
        if run_dir and self.on_delete is not None:
            self.on_delete(run_dir)
        return run_dir

    def forget(self, run_dir: str) -> None:
        """A deleted run: out of the selection now (the next set_runs drops its row)."""
        if run_dir in self.selected:
            self.selected = tuple(d for d in self.selected if d != run_dir)


def local_time(epoch: float | None) -> str:
    """'2026-12-02 14:05' in the machine's local time zone."""
    if epoch is None:
        return fmt.DASH
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
