"""The dashboard's samples table: prompt, reference and completion at each eval step, newest
first, from the run's `sample` events (train/eval_samples.py; RunSeries.samples)."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..runs.samples import newest_first
from . import fmt

MAX_SHOWN_STEPS = 20  # the newest evals; older ones stay in metrics.jsonl (`gemma-ft logs --stream samples`)
_CELL = "padding:3px 8px;border-top:1px solid #ddd;vertical-align:top;white-space:pre-wrap;word-break:break-word"


def table_html(samples: list[dict[str, Any]], max_steps: int = MAX_SHOWN_STEPS) -> str:
    """The samples table, newest step first, at most `max_steps` steps."""
    rows, steps = [], []
    for e in newest_first(samples):
        if e["step"] not in steps:
            if len(steps) == max_steps:
                break
            steps.append(e["step"])
        ref = e.get("reference") or ""
        rows.append(f'<tr class="gft-sample-row"><td style="{_CELL}">{e["step"]}</td>'
                    f'<td style="{_CELL}">{fmt.esc(e.get("prompt"))}</td>'
                    f'<td style="{_CELL};color:#555">{fmt.esc(ref) if ref else fmt.DASH}</td>'
                    f'<td style="{_CELL}">{fmt.esc(e.get("completion")) or "<i>(empty)</i>"}</td></tr>')
    head = "".join(f'<th style="text-align:left;padding:3px 8px">{h}</th>'
                   for h in ("step", "prompt", "reference", "completion"))
    return (f'<div style="max-height:300px;overflow:auto"><table class="gft-samples-table" '
            f'style="border-collapse:collapse;width:100%;font-size:0.9em;table-layout:fixed">'
            f'<colgroup><col style="width:60px"><col><col><col></colgroup>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


class SamplesView(w.VBox):
    """Public names: `title`, `table` (HTML); `show(series)` redraws only when samples arrived."""

    def __init__(self, **kwargs):
        self.title = w.HTML("<b>Samples</b> (greedy, at each eval)")
        self.table = w.HTML()
        self.table.add_class("gft-samples")
        self._shown: tuple | None = None
        super().__init__([self.title, self.table], **kwargs)
        self.add_class("gft-samples-view")
        self.layout.display = "none"

    def show(self, series: Any) -> None:
        """Show the series' samples; hidden while there are none."""
        samples = list(getattr(series, "samples", None) or [])
        key = (id(series), len(samples), samples[-1]["step"] if samples else None)
        if key == self._shown:
            return
        self._shown = key
        self.layout.display = None if samples else "none"
        self.table.value = table_html(samples) if samples else ""
