"""Run history: every run in the workspace (state, steps, last loss, start time), newest
first. Select one to view it in the panel; select two or more to overlay their loss curves."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import ipywidgets as w

from . import fmt, plots


def run_label(status: Any) -> str:
    state = fmt.state_value(status.state)
    step = status.step if status.step is not None else "—"
    total = status.max_steps if status.max_steps else "—"
    loss = fmt.number(status.loss) if status.loss is not None else "—"
    return f"{status.run_name}  ·  {state}  ·  {step}/{total} steps  ·  loss {loss}  ·  {fmt.when(status.started_at)}"


class HistoryView(w.VBox):
    """Public names: `select` (SelectMultiple of run folders), `overlay_figure`,
    `overlay_lines`, `hint`, `show_current_button`; property `selected`."""

    def __init__(self, on_select: Callable[[tuple[str, ...]], None] | None = None, **kwargs):
        self.on_select = on_select
        self.select = w.SelectMultiple(options=[], rows=8, layout=w.Layout(width="100%"))
        self.select.add_class("gft-history")
        self.select.observe(self._selected, "value")
        self.hint = w.HTML('<span style="color:#666">Select a run to view it; select two or more '
                           '(Ctrl/Shift-click) to compare their loss curves.</span>')
        self.show_current_button = w.Button(description="Show current run", icon="crosshairs",
                                            layout=w.Layout(width="170px"))
        self.show_current_button.add_class("gft-show-current")
        self.show_current_button.on_click(lambda _b: self.clear_selection())
        self.overlay_figure = plots.overlay_figure()
        self.overlay_lines: list = []
        self._labels: tuple = ()
        self._label_memo: dict = {}  # run folder -> (the status it was made from, its label)
        self._listed = None  # the statuses listed last
        self._quiet = 0
        # The overlay joins the children only while it has lines to show: a hidden bqplot figure
        # still renders, at size 0, and the browser logs negative-size errors for it.
        self._base = (self.hint, self.select, self.show_current_button)
        super().__init__(self._base, **kwargs)
        self.add_class("gft-history-view")

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(self.select.value)

    def set_runs(self, statuses: Sequence[Any]) -> None:
        """List these runs (newest first), keeping the selection by run folder."""
        if statuses is self._listed:  # RunManager.runs() gave the very same list: nothing changed
            return
        self._listed = statuses
        memo, labels = self._label_memo, {}
        for s in statuses:  # an ended run's status is the same object poll after poll: label it once
            hit = memo.get(s.run_dir)
            labels[s.run_dir] = hit if hit is not None and hit[0] is s else (s, run_label(s))
        self._label_memo = labels
        options = tuple((labels[s.run_dir][1], s.run_dir) for s in statuses)
        if options == self._labels:
            return
        keep = [v for v in self.select.value if v in {d for _, d in options}]
        self._quiet += 1
        try:
            with self.select.hold_sync():
                self.select.options = options
                self.select.value = tuple(keep)
        finally:
            self._quiet -= 1
        self._labels = options
        if tuple(keep) != tuple(self.select.value) or len(keep) != len(self.select.value):
            self._selected()

    def clear_selection(self) -> None:
        self.select.value = ()

    def _selected(self, change=None) -> None:
        if self._quiet:
            return
        if self.on_select is not None:
            self.on_select(self.selected)

    def show_overlay(self, series: list[tuple[str, Sequence[float], Sequence[float]]],
                     max_points: int = plots.MAX_POINTS) -> None:
        self.overlay_lines = plots.set_overlay(self.overlay_figure, series, max_points)
        children = self._base + ((self.overlay_figure,) if len(series) >= 2 else ())
        if self.children != children:
            self.children = children
