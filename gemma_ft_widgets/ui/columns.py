"""metrics.jsonl read into numpy columns for the curves: the parse behind a first attach.

A panel attaching to a long run reads its whole history once. Parsing a million step lines
with `json.loads` (a dict each) is seconds of work and a gigabyte of dicts, although the
curves need four numbers per step (step, loss, tokens/s, step time) and two per eval (step,
eval loss). Here step and eval lines are parsed in bulk with numpy instead:

* the *layout* of a kind of line is learned from one such line, parsed with `json.loads`:
  its keys in order and its separators (a layout is learned only from a line whose values are
  all numbers or null);
* every line of a block (megabytes of whole lines) that starts with `{"event"` is checked
  against the layouts in bulk: the same number of commas, each key in its place, each value
  a JSON number or null / NaN / Infinity / -Infinity, and a closing brace;
* the values the curves use are read as JSON (one `json.loads` of a padded array per column,
  so a value that is not a valid JSON number, such as 01 or 1.2.3, sends its line to the slow
  path; a step must be an integer). The other values are only checked for number characters,
  starting with a digit or "-" and ending with a digit: a number they spell wrongly in the
  middle, such as 1.2.3, is not noticed (no writer produces one; `json.loads` would call
  that line corrupt);
* every other line (other events, a line of another layout, a corrupt line) takes the slow
  path: `json.loads`, as `contract.JsonlTail` does; a corrupt line is skipped and counted.

Small reads (a refresh reads a line or two) take the slow path only. The result, a
`MetricsBatch`, keeps the steps' and evals' order with respect to the other events (a
`start` truncates the curves at its resume step) and the full event of the steps that may
become the last step shown (the KPIs read it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

import numpy as np

KINDS = {"step": ("step", "loss", "tokens_per_s", "step_time_s"),  # the fields the curves read
         "eval": ("step", "eval_loss")}
FIELDS = KINDS["step"]
SMALL_BLOCK = 32 << 10  # blocks below this are parsed line by line
MAX_LAYOUTS = 4
LEARN_MIN = 64  # lines of a block that fit no layout before one is learned from them
MAX_VALUE = 31  # longest value the bulk path reads (bytes)

_KEY = re.compile(rb'\s*"([A-Za-z0-9_]+)"\s*:\s*')
_PREFIX = re.compile(rb'\{\s*"event"\s*:\s*"([a-z]+)"\s*')
_NUMBER_CHARS = np.zeros(256, dtype=bool)
_NUMBER_CHARS[np.frombuffer(b"0123456789.eE+-", dtype=np.uint8)] = True
_INT_CHARS = np.zeros(256, dtype=bool)
_INT_CHARS[np.frombuffer(b"0123456789- ", dtype=np.uint8)] = True
_FIRST_CHARS = np.zeros(256, dtype=bool)
_FIRST_CHARS[np.frombuffer(b"0123456789-", dtype=np.uint8)] = True
_DIGITS = np.zeros(256, dtype=bool)
_DIGITS[np.frombuffer(b"0123456789", dtype=np.uint8)] = True
_PAD = b"\0" * 64  # after a block: reading 8 bytes at a time never runs past it


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
    def of_events(cls, kind: str, lines: list[int], events: list[dict[str, Any]]) -> "Rows":
        return cls(kind, np.asarray(lines, dtype=np.int64),
                   {k: np.array([as_float(e.get(k)) for e in events], dtype=float) for k in KINDS[kind]})

    @classmethod
    def merged(cls, kind: str, parts: list["Rows"]) -> "Rows":
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
    def joined(cls, kind: str, parts: list["Rows"]) -> "Rows":
        """One Rows of consecutive parts (lines already numbered for the whole)."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls(kind)
        return cls(kind, np.concatenate([p.line for p in parts]),
                   {k: np.concatenate([p.columns[k] for p in parts]) for k in KINDS[kind]})

    def shifted(self, lines: int) -> "Rows":
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
        return self.steps.line

    @property
    def columns(self) -> dict[str, np.ndarray]:
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
            e = {"event": "step", **{k: float(v[row]) for k, v in self.steps.columns.items()}}
            e["step"] = int(e["step"])
        return e

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> "MetricsBatch":
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
        if e.get("event") == "start":
            i = int(np.searchsorted(step_lines, line)) - 1
            if i >= 0:
                keep.add(i)
    return keep


class Layout:
    """How one writer lays out one kind of line: `{"event":"<kind>",` then keys in order."""

    def __init__(self, kind: str, prefix: bytes, tokens: list[bytes], keys: list[str]):
        self.kind = kind
        self.prefix = prefix  # up to and including the first comma
        self.tokens = tokens  # per field after the first: the bytes from after a comma to its value
        self.keys = keys

    @classmethod
    def of(cls, line: bytes) -> "Layout | None":
        """The layout of a valid step or eval line whose values are all numbers or null."""
        try:
            e = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(e, dict) or kind_of(e) is None or next(iter(e)) != "event":
            return None
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                   for k, v in e.items() if k != "event"):
            return None
        pieces = line.split(b",")
        if len(pieces) != len(e) or len(pieces) < 2 or not pieces[-1].endswith(b"}"):
            return None
        head = _PREFIX.fullmatch(pieces[0])
        if head is None or head.group(1).decode() != e["event"] or len(pieces[0]) + 1 > 24:
            return None
        tokens, keys = [], []
        for piece, key in zip(pieces[1:], list(e)[1:]):
            m = _KEY.match(piece)
            if m is None or m.group(1).decode() != key or len(m.group(0)) > 24:
                return None
            tokens.append(m.group(0))
            keys.append(key)
        if pieces[-1][-2:-1].isspace():
            return None  # whitespace before the closing brace: not handled in bulk
        return cls(e["event"], pieces[0] + b",", tokens, keys)


class BlockParser:
    """Parses blocks of whole lines (as `runs.metrics.MetricsBlocks` yields them) into a
    `MetricsBatch`; keeps the layouts it learned for the next blocks."""

    def __init__(self) -> None:
        self.layouts: list[Layout] = []
        self.bulk_rows = 0  # lines read in bulk so far (the others went through json.loads)

    def parse(self, blocks: Iterable[bytes]) -> MetricsBatch:
        steps: list[Rows] = []
        evals: list[Rows] = []
        others: list[tuple[int, dict[str, Any]]] = []
        step_events: dict[int, dict[str, Any]] = {}
        events = corrupt = base_line = base_row = 0
        for block in blocks:
            n_lines, b_steps, b_evals, b_events, b_others, b_corrupt = self._block(block)
            steps.append(b_steps.shifted(base_line))
            evals.append(b_evals.shifted(base_line))
            step_events.update((base_row + i, e) for i, e in b_events.items())
            others.extend((base_line + line, e) for line, e in b_others)
            events += len(b_steps) + len(b_evals) + len(b_others)
            corrupt += b_corrupt
            base_line += n_lines
            base_row += len(b_steps)
        return MetricsBatch(Rows.joined("step", steps), Rows.joined("eval", evals), others, events,
                            corrupt, step_events)

    # -- one block ----------------------------------------------------------------------------
    def _block(self, block: bytes):
        """(lines in the block, step Rows, eval Rows, {step row: full event} for the rows that
        may become the last step, other events, corrupt lines); lines counted from the
        block's first."""
        if len(block) < SMALL_BLOCK:
            raws = block.split(b"\n")[:-1]
            n_lines = len(raws)
            bulk = {k: Rows(k) for k in KINDS}
            slow: Iterable[int] = range(n_lines)
            raw_of = raws.__getitem__
        else:
            starts, ends, bulk = self._bulk(block)
            n_lines = len(ends)
            fast = np.zeros(n_lines, dtype=bool)
            for rows in bulk.values():
                fast[rows.line] = True
            slow = np.flatnonzero(~fast).tolist()
            s_list, e_list = starts.tolist(), ends.tolist()
            raw_of = lambda i: block[s_list[i]:e_list[i]]  # noqa: E731

        slow_rows: dict[str, tuple[list[int], list[dict]]] = {k: ([], []) for k in KINDS}
        others: list[tuple[int, dict]] = []
        corrupt = 0
        for i in slow:
            raw = raw_of(i)
            e = _parse(raw)
            if e is None:
                corrupt += raw.strip() != b""
                continue
            _sort_event(i, e, slow_rows, others)
        # A kind read one line at a time here: learn its layout for the next (big) blocks.
        for kind, (lines, _) in slow_rows.items():
            if len(lines) >= 2 and len(self.layouts) < MAX_LAYOUTS and \
                    not any(layout.kind == kind for layout in self.layouts):
                layout = Layout.of(raw_of(lines[-1]))
                if layout is not None:
                    self.layouts.append(layout)

        slow_steps = Rows.of_events("step", *slow_rows["step"])
        steps = Rows.merged("step", [bulk["step"], slow_steps])
        evals = Rows.merged("eval", [bulk["eval"], Rows.of_events("eval", *slow_rows["eval"])])
        # Full events of the step rows that may become the last step shown.
        by_line = dict(zip(*slow_rows["step"]))
        step_events = {}
        for i in _rows_to_keep(steps.line, others):
            line = int(steps.line[i])
            step_events[i] = by_line[line] if line in by_line else json.loads(raw_of(line))
        return n_lines, steps, evals, step_events, others, corrupt

    def _bulk(self, block: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, Rows]]:
        """(line starts, line ends, {kind: Rows read in bulk}) of a big block."""
        n = len(block)
        buf = np.frombuffer(block + _PAD, dtype=np.uint8)
        body = buf[:n]
        # Newlines and commas in one sorted array: a line's commas are the separators between
        # the newline before it and its own.
        sep = np.flatnonzero((body == 10) | (body == 44))
        nl = np.flatnonzero(buf[sep] == 10)  # indices into sep
        ends = sep[nl]
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        first = np.empty_like(nl)  # per line: index into sep of its first separator
        first[0] = 0
        first[1:] = nl[:-1] + 1
        counts = nl - first  # commas per line
        words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
        todo = np.flatnonzero(_match(words, starts, b'{"event"') & (ends - starts > 16))
        parts: dict[str, list[Rows]] = {k: [] for k in KINDS}
        tried: set[int] = set()  # lines no layout could be learned from
        while len(todo):
            for layout in self.layouts:
                ok, vals = _apply(layout, buf, words, sep, first[todo], counts[todo], starts[todo], ends[todo])
                if ok.all():
                    parts[layout.kind].append(Rows(layout.kind, todo, vals))
                    todo = todo[:0]
                    break
                if ok.any():
                    parts[layout.kind].append(Rows(layout.kind, todo[ok], {k: v[ok] for k, v in vals.items()}))
                todo = todo[~ok]
            # Lines that start like an event but fit no known layout: learn one from the first
            # of them that is a step or an eval of numbers (trying a few; the slow path learns
            # from the lines it parsed too).
            if len(todo) < LEARN_MIN or len(self.layouts) >= MAX_LAYOUTS:
                break
            new = None
            for i in [i for i in todo[:64].tolist() if i not in tried][:16]:
                tried.add(i)
                new = Layout.of(block[starts[i]: ends[i]])
                if new is not None:
                    break
            if new is None:
                break
            self.layouts.append(new)
        bulk = {k: Rows.merged(k, v) for k, v in parts.items()}
        self.bulk_rows += sum(len(r) for r in bulk.values())
        return starts, ends, bulk


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _word(pattern: bytes) -> tuple[int, int]:
    """(value, mask) of up to 8 bytes as a little-endian uint64."""
    value = int.from_bytes(pattern.ljust(8, b"\0"), "little")
    mask = int.from_bytes(b"\xff" * len(pattern) + b"\0" * (8 - len(pattern)), "little")
    return value, mask


def _match(words: np.ndarray, pos: np.ndarray, pattern: bytes) -> np.ndarray:
    """Whether `pattern` is at each position (positions within the padded buffer)."""
    ok = np.ones(len(pos), dtype=bool)
    for k in range(0, len(pattern), 8):
        value, mask = _word(pattern[k:k + 8])
        w = words[pos + k]
        if mask != 0xFFFFFFFFFFFFFFFF:
            w &= np.uint64(mask)
        ok &= w == np.uint64(value)
    return ok


_ONES = np.uint64(0x0101010101010101)
_SPACE = np.uint64(int.from_bytes(b" " * 8, "little"))
_ZEROS = np.uint64(int.from_bytes(b"0" * 8, "little"))
_COMMA = np.uint64(int.from_bytes(b",       ", "little"))
_ZERO = np.uint64(int.from_bytes(b"0       ", "little"))
_KEEP = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)  # low i bytes
_LIT_VALUES = np.array([np.nan, np.nan, np.nan, np.inf, -np.inf])


def _apply(layout: Layout, buf, words, sep, first, counts, starts, ends):
    """(ok, {field: values}) for the lines [starts, ends) against `layout`: ok where a line
    is laid out so and its values are what the layout allows (see the module's docstring).
    `sep[first]` is a line's first comma (when it has any), `counts` its number of commas.
    Positions read stay inside the padded buffer: a token and a value are at most 24 and 31
    bytes from a comma."""
    k = len(layout.tokens)  # commas in a matching line
    m = len(starts)
    fields = KINDS[layout.kind]
    ok = (counts == k) & _match(words, starts, layout.prefix) & (buf[ends - 1] == ord("}"))
    if not ok.any():
        return ok, {}
    # (k, m): the commas; the first one ends the prefix (which holds no other).
    c = sep[np.minimum(first[:, None] + np.arange(k), len(sep) - 1)].T.copy()
    out: dict[str, np.ndarray] = {}
    for j, (token, key) in enumerate(zip(layout.tokens, layout.keys)):
        at = c[j] + 1
        ok &= _match(words, at, token)
        vs = at + len(token)
        ve = c[j + 1] if j + 1 < k else ends - 1
        size = ve - vs
        ok &= (size >= 1) & (size <= MAX_VALUE)
        nw = -(-int(size[ok].max(initial=1)) // 8)
        need = key in fields
        # The value's bytes, 8 per uint64, padded past its end (with spaces when it is read as
        # JSON, then ",       "; with "0"s when only its characters are checked).
        w64 = np.empty((m, nw + need), dtype="<u8")
        pad = _SPACE if need else _ZEROS
        for w in range(nw):
            v = words[vs + 8 * w]
            left = size - 8 * w
            short = left < 8
            if short.any():
                keep = _KEEP[np.clip(left, 0, 8)]
                v = np.where(short, (v & keep) | (pad & ~keep), v)
            w64[:, w] = v
        if need:
            w64[:, nw] = _COMMA
        mat = w64.view(np.uint8)[:, : 8 * nw]
        lead = mat[:, 0]
        first_ok = _FIRST_CHARS[lead]
        if key == "step":  # an int (the curves need one): null, NaN or a float go the slow way
            number = first_ok & _all_bytes(_INT_CHARS.take(mat))
            vals, valid = _numbers(w64, ok & number)
            ok &= valid
            out[key] = vals
            continue
        lit = _literals(w64, size, ~_DIGITS[lead], pad)
        if need:  # read as JSON, which checks the number strictly
            vals, valid = _numbers(w64, ok & first_ok & (lit == 0))
            ok &= valid | (lit != 0)
            if lit.any():
                vals[lit != 0] = _LIT_VALUES[lit[lit != 0]]
            out[key] = vals
        else:  # only checked: number characters, starting with a digit or "-", ending with a digit
            number = _all_bytes(_NUMBER_CHARS.take(mat)) & first_ok & _DIGITS[buf[ve - 1]]
            ok &= number | (lit != 0)
    for key in fields:
        if key not in out:  # not in this layout: as a missing key, NaN
            out[key] = np.full(m, np.nan)
    return ok, out


def _all_bytes(flags: np.ndarray) -> np.ndarray:
    """Per row of a contiguous (m, 8k) bool matrix: all True."""
    w = flags.view("<u8")
    out = w[:, 0] == _ONES
    for i in range(1, w.shape[1]):
        out &= w[:, i] == _ONES
    return out


def _literals(w64: np.ndarray, size: np.ndarray, rows: np.ndarray, pad: np.uint64) -> np.ndarray:
    """0, or the JSON literal each of `rows` holds (1 null, 2 NaN, 3 Infinity, 4 -Infinity);
    `w64`: the values' bytes, padded past their end with the bytes of `pad`."""
    out = np.zeros(len(w64), dtype=np.int8)
    idx = np.flatnonzero(rows)
    if not len(idx):
        return out
    w0, sz = w64[idx, 0], size[idx]
    for code, text in ((1, b"null"), (2, b"NaN"), (3, b"Infinity")):
        value, mask = _word(text)
        word = np.uint64(value | (int(pad) & ~mask))
        out[idx[(sz == len(text)) & (w0 == word)]] = code
    if w64.shape[1] >= 2:
        value, mask = _word(b"y")
        minus = (sz == 9) & (w0 == np.uint64(_word(b"-Infinit")[0])) \
            & (w64[idx, 1] == np.uint64(value | (int(pad) & ~mask)))
        out[idx[minus]] = 4
    return out


def _numbers(w64: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid): each of `rows` read as a strict JSON number (a value that is not one,
    such as 01 or 1.5.2, is not valid); NaN for the other rows. `w64`: per row, the value's
    bytes padded with spaces, then ",       " (changed here: the other rows become 0)."""
    m, cols = w64.shape
    w64[~rows, 0] = _ZERO
    w64[~rows, 1:cols - 1] = _SPACE
    valid = rows.copy()
    try:
        vals = np.array(json.loads(b"[" + w64.tobytes()[:-8] + b"]"), dtype=float)
    except (ValueError, OverflowError, TypeError):  # some value is not a JSON number: find it
        vals = np.full(m, np.nan)
        for i in np.flatnonzero(rows).tolist():
            try:
                v = json.loads(w64[i, :cols - 1].tobytes())
            except (ValueError, OverflowError):
                valid[i] = False
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                valid[i] = False
            else:
                vals[i] = as_float(v)
    vals[~valid] = np.nan
    return vals, valid
