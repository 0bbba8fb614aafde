"""Dataset preview for the form: detected format, first rows raw and as the model sees them,
a token-length histogram and the share of examples that max_seq_len would truncate.

Reading a dataset is cached by (path, mtime, size, format), so re-validating the form on
every change does not re-read the file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import ipywidgets as w
import numpy as np

from .. import datasets
from . import fmt, plots, tokens

PREVIEW_ROWS = 3
MAX_MEASURED = 5000  # examples tokenised for the histogram


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one object per file version
class DatasetInfo:
    """A dataset file as read for the preview: its records and detected format, or the problems found."""

    path: str
    format: str | None
    records: tuple = ()
    problems: tuple = ()

    @property
    def ok(self) -> bool:
        """Whether the file was read without problems and holds records."""
        return not self.problems and bool(self.records)


def inspect(path: str, dataset_format: str = "auto") -> DatasetInfo:
    """Load and validate a dataset file, cached until the file changes."""
    path = os.path.abspath(os.path.expanduser(path)) if path else ""
    problem = datasets.check_readable(path)
    if problem:
        return DatasetInfo(path, None, problems=(problem,))
    st = os.stat(path)
    return _inspect(path, st.st_mtime_ns, st.st_size, dataset_format)


@functools.lru_cache(maxsize=4)
def _inspect(path: str, mtime_ns: int, size: int, dataset_format: str) -> DatasetInfo:
    try:
        records, detected = datasets.load_records(path, dataset_format)
    except datasets.DatasetError as e:
        return DatasetInfo(path, None, problems=tuple(e.problems))
    except OSError as e:
        return DatasetInfo(path, None, problems=(f"cannot read {path}: {e}",))
    return DatasetInfo(path, detected, records=tuple(records))


@functools.lru_cache(maxsize=8)
def _lengths(info: DatasetInfo, model: str) -> tuple[tuple[int, ...], str, int]:
    """(token lengths of up to MAX_MEASURED examples, tokenizer label, examples measured)."""
    count, label = tokens.counter(model)
    records = info.records
    if len(records) > MAX_MEASURED:  # evenly spaced sample of a large file
        idx = np.linspace(0, len(records) - 1, MAX_MEASURED).astype(int)
        records = [records[i] for i in idx]
    pairs = [datasets.render_example(r, info.format) for r in records]
    return tuple(tokens.example_lengths(pairs, count)), label, len(records)


def token_lengths(info: DatasetInfo, model: str) -> tuple[list[int], str]:
    """(token lengths of up to MAX_MEASURED examples, the tokenizer's label) for `model`."""
    lengths, label, _ = _lengths(info, model)
    return list(lengths), label


def truncated_share(lengths: list[int], max_seq_len: int) -> float:
    """The share of `lengths` longer than max_seq_len (0 for none)."""
    if not lengths:
        return 0.0
    return float(np.mean(np.asarray(lengths) > max_seq_len))


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def rows_html(info: DatasetInfo, n: int = PREVIEW_ROWS) -> str:
    """A table of the first `n` records: raw, the prompt as the model sees it, the response trained on."""
    cell = 'style="vertical-align:top;border:1px solid #ddd;padding:4px;max-width:360px"'
    pre = 'style="margin:0;white-space:pre-wrap;word-break:break-word;font-size:12px"'
    # A fixed layout at the container's width: long cells wrap instead of widening the table
    # past the notebook (a horizontal scrollbar).
    out = [f'<table class="gft-preview-table" style="border-collapse:collapse;font-size:12px;width:100%;'
           f'table-layout:fixed">'
           f'<tr><th {cell}>raw</th><th {cell}>prompt (as the model sees it; no loss)</th>'
           f'<th {cell}>response (trained on)</th></tr>']
    for r in info.records[:n]:
        prompt, response = datasets.render_example(r, info.format)
        raw = json.dumps(r, ensure_ascii=False)
        out.append(f"<tr><td {cell}><pre {pre}>{fmt.esc(_short(raw))}</pre></td>"
                   f"<td {cell}><pre {pre}>{fmt.esc(_short(prompt)) or '<i>(none: plain text)</i>'}</pre></td>"
                   f"<td {cell}><pre {pre}>{fmt.esc(_short(response))}</pre></td></tr>")
    out.append("</table>")
    return "".join(out)


class DatasetPreview(w.VBox):
    """Shown under the dataset fields; `update()` redraws it for a dataset and model."""

    def __init__(self, **kwargs):
        self.summary = w.HTML()
        self.summary.add_class("gft-preview-summary")
        self.table = w.HTML()
        self.table.add_class("gft-preview-rows")
        self.histogram, self.bars, self.cut_line = plots.histogram_figure()
        self.truncation = w.HTML()
        self.truncation.add_class("gft-truncation")
        self.lengths: list[int] = []
        self.tokenizer_label = ""
        self._key = None
        super().__init__([self.summary, self.table, plots.keyed(self.histogram), self.truncation], **kwargs)
        self.add_class("gft-preview")
        self.layout.display = "none"

    def clear(self) -> None:
        """Hide the preview and forget what it showed."""
        self._key = None
        self.lengths = []
        self.layout.display = "none"

    def update(self, info: DatasetInfo, model: str, max_seq_len: int, requested_format: str = "auto") -> None:
        """Show a readable dataset for `model` and `max_seq_len` (format, rows, length histogram,
        the truncated share); an unreadable one hides the preview."""
        if not info.ok:
            self.clear()
            return
        key = (info, model, max_seq_len)
        if key == self._key:
            return
        how = "auto-detected" if requested_format == "auto" else "as chosen"
        self.summary.value = (f"<b>Format:</b> {fmt.esc(info.format)} ({how}) · "
                              f"<b>{len(info.records)}</b> examples")
        self.table.value = rows_html(info)
        lengths, label, measured = _lengths(info, model)
        self.lengths, self.tokenizer_label = list(lengths), label
        plots.set_histogram(self.bars, self.cut_line, self.lengths, max_seq_len)
        plots.fit_ticks(self.histogram, y_integer=True, y_zero=True)
        share = truncated_share(self.lengths, max_seq_len)
        n_long = int(round(share * measured))
        of = f"{measured} measured" if measured < len(info.records) else f"{measured}"
        colour = "#b71c1c" if share > 0.1 else ("#e65100" if share > 0 else "#1b5e20")
        self.truncation.value = (
            f'<span style="color:{colour}">{n_long} of {of} examples ({share:.1%}) are longer than '
            f"max_seq_len {max_seq_len} and will be truncated.</span> "
            f'<span style="color:#666">Longest: {max(self.lengths) if self.lengths else 0} tokens; '
            f"median {int(np.median(self.lengths)) if self.lengths else 0}. {fmt.esc(label)}</span>")
        self.layout.display = None
        self._key = key
