"""The run table: a row per run (state, model, method, key hyperparameters, eval losses,
steps, wall time across attempts, local start time, tags, note), sortable by a click on a
column's header, filtered by text and state, a page at a time. Tick one run to view it in
the panel, edit its note, download its metrics as CSV or delete it; tick two or more to
overlay their train and eval curves and see the config keys that differ.

The state lives in `RunTableModel` (ui/run_table_model.py); this module only draws it. The
rows are a fixed pool of widgets (one page), whose values change only when what they show did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w

from ..runs import RunError
from . import fmt, plots
from .download import csv_link
from .run_table_model import ALL_STATES, COLUMNS, STATES, RunRow, RunTableModel, local_time

CHECK_PX = 30
TABLE_PX = CHECK_PX + sum(px for _, _, px, _ in COLUMNS)
CELL = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:0 4px;box-sizing:border-box"
WIDTH = {key: px for key, _, px, _ in COLUMNS}
# A narrow notebook (800 px) drops columns in this order, a group at a time, instead of making
# the table scroll sideways: what a comparison needs most (run, state, eval loss) stays, and at
# the last level the run's name is cut shorter (its full name is in the cell's tooltip).
DROP_ORDER: tuple[tuple[str, ...], ...] = (("note", "tags"), ("best_eval", "batch", "wall"), ("started",),
                                           ("method",), ("model",), ("lr",), ("steps",))
FIT_CLASS = "gft-run-fit"  # on the table's box: the container the queries measure ("All columns" removes it)
NARROW_NAME_PX = 120


def fit_levels() -> list[tuple[int, tuple[str, ...]]]:
    """(table width in px, columns hidden) from all columns down to the narrowest table."""
    hidden: tuple[str, ...] = ()
    levels = [(TABLE_PX, hidden)]
    for group in DROP_ORDER:
        hidden += group
        levels.append((TABLE_PX - sum(WIDTH[k] for k in hidden), hidden))
    levels.append((levels[-1][0] - WIDTH["name"] + NARROW_NAME_PX, hidden))
    return levels


def fit_style() -> str:
    """CSS container queries on the table's box: below each level's width, that level's columns
    are hidden and the table narrows to the next level (the browser measures; the kernel cannot)."""
    levels = fit_levels()
    rules = [f".{FIT_CLASS}{{container-type:inline-size}}",
             f".gft-runs-w{{width:{TABLE_PX}px}}", f".gft-runs-cw{{width:{TABLE_PX - CHECK_PX}px}}"]
    for (above, _), (px, hidden) in zip(levels, levels[1:], strict=False):
        cols = ",".join(f".gft-run-table .gft-col-{k}" for k in hidden)
        narrow = (f".gft-run-table .gft-col-name{{width:{NARROW_NAME_PX}px !important;"
                  f"flex-basis:{NARROW_NAME_PX}px !important}}") if px == levels[-1][0] else ""
        rules.append(f"@container (max-width:{above - 1}px){{{cols}{{display:none !important}}{narrow}"
                     f".gft-runs-w{{width:{px}px}}.gft-runs-cw{{width:{px - CHECK_PX}px}}}}")
    return "<style>" + "".join(rules) + "</style>"


def _cell(key: str, text: str, title: str = "", align: str = "left") -> str:
    tip = f' title="{fmt.esc(title)}"' if title else ""
    return (f'<div class="gft-col-{key}" style="{CELL};flex:0 0 {WIDTH[key]}px;text-align:{align}"{tip}>'
            f"{text}</div>")


def row_html(r: RunRow) -> str:
    """One row's cells, laid out on the header's columns."""
    num = lambda key, x: _cell(key, fmt.number(x), align="right")  # noqa: E731
    steps = f"{'—' if r.step is None else r.step}/{r.max_steps or '—'}"
    wall = fmt.duration(r.wall_s) + (f" ({r.attempts}×)" if r.attempts > 1 else "")
    tags = " ".join(f'<span style="background:#eceff1;border-radius:8px;padding:0 6px">{fmt.esc(x)}</span>'
                    for x in r.tags)
    lr = fmt.DASH if r.lr is None else fmt.esc(f"{r.lr:.3g}" if isinstance(r.lr, (int, float)) else r.lr)
    cells = [
        _cell("name", f"<code>{fmt.esc(r.name)}</code>", r.run_dir),
        _cell("state", fmt.badge(r.state)),
        _cell("model", fmt.esc(r.model), r.model), _cell("method", fmt.esc(r.method), r.method),
        _cell("lr", lr, align="right"),
        _cell("batch", fmt.esc(r.batch if r.batch is not None else fmt.DASH), align="right"),
        num("final_eval", r.final_eval), num("best_eval", r.best_eval), _cell("steps", steps, align="right"),
        _cell("wall", wall, f"{r.attempts} attempt(s)" if r.attempts else "", align="right"),
        _cell("started", local_time(r.started), "local time"), _cell("tags", tags, ", ".join(r.tags)),
        _cell("note", fmt.esc(r.note), r.note),
    ]
    return '<div class="gft-run-cells" style="display:flex;font-size:12px;line-height:26px">' + "".join(cells) + "</div>"


def _value(v: Any) -> str:
    if v is None:
        return fmt.DASH
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def diff_html(diff: list[tuple[str, list[Any]]], names: Sequence[str]) -> str:
    """A table of the config keys that differ (`config_diff`), one column per run in `names`."""
    if not diff:
        return '<span style="color:#666">The selected runs have the same config.</span>'
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{fmt.esc(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td style='padding:2px 8px'><code>{fmt.esc(k)}</code></td>"
        + "".join(f"<td style='padding:2px 8px'>{fmt.esc(_value(v))}</td>" for v in values)
        + "</tr>" for k, values in diff)
    return (f'<div style="overflow-x:auto"><b>Config keys that differ</b><table style="font-size:12px;'
            f'border-collapse:collapse"><tr><th style="text-align:left;padding:2px 8px">key</th>{head}</tr>'
            f"{body}</table></div>")


class _RowWidgets:
    def __init__(self, on_toggle: Callable[[_RowWidgets, bool], None]):
        self.run_dir = ""
        self.row: RunRow | None = None  # the row drawn last
        self.check = w.Checkbox(value=False, indent=False, layout=w.Layout(width=f"{CHECK_PX}px", margin="0"))
        self.cells = w.HTML(layout=w.Layout(margin="0"))
        self.cells.add_class("gft-runs-cw")  # its width follows the columns shown (fit_style)
        self.box = w.HBox([self.check, self.cells], layout=w.Layout(align_items="center", display="none",
                                                                     border_bottom="1px solid #eee"))
        self.box.add_class("gft-run-row")
        self.check.observe(lambda c: on_toggle(self, c["new"]), "value")


class RunTable(w.VBox):
    """Public names: `model` (RunTableModel), `filter_text` [gft-run-filter], `state_pick`
    [gft-run-state-filter], `sort_buttons[key]` [gft-sort-<key>], `row_widgets` (the page's
    rows [gft-run-row]: .check, .cells, .run_dir), `count_label` [gft-run-count], `prev_button`,
    `next_button`, `show_current_button` [gft-show-current], `note_text` [gft-run-note],
    `save_note_button` [gft-save-note], `csv_button` [gft-csv], `csv_html` [gft-csv-output],
    `delete_button` [gft-delete-run], `confirm_delete_button` [gft-delete-confirm],
    `cancel_delete_button` [gft-delete-cancel], `message` [gft-run-table-message],
    `all_columns` [gft-all-columns], `overlay_figure` [gft-overlay-figure], `overlay_lines`, `diff_html` [gft-config-diff];
    property `selected`; `set_runs(statuses)`, `show_overlay(series)`."""

    def __init__(self, on_select: Callable[[tuple[str, ...]], None] | None = None,
                 on_delete: Callable[[str], None] | None = None, page_size: int | None = None, **kwargs):
        self.on_select = on_select
        self.model = RunTableModel(on_delete=on_delete, **({"page_size": page_size} if page_size else {}))
        m = self.model
        self._build_controls(m)
        self._build_table(m)
        self._build_actions(m)
        self.overlay_figure = plots.overlay_figure()
        self.overlay_lines: list = []
        self.diff_html = w.HTML()
        self.diff_html.add_class("gft-config-diff")
        self._quiet = 0
        self._shown_selection: tuple = ()
        # The overlay joins the children only while it has lines to show: a hidden bqplot figure
        # still renders, at size 0, and the browser logs negative-size errors for it.
        self._base = (self.hint, self.controls, self.table, self.message, self.actions)
        super().__init__(self._base, **kwargs)
        self.add_class("gft-history-view")
        m.observe(lambda _c: self.render(), ["version", "page", "confirming_delete"])
        m.observe(self._selection_changed, "selected")
        self.render()

    # -- building ---------------------------------------------------------------------------
    def _build_controls(self, m: RunTableModel) -> None:
        """The filter, the state pick, the page buttons, "Show current run", "All columns"."""
        self.hint = w.HTML('<span style="color:#666">Tick a run to view it; tick two or more to compare '
                           'their curves and configs. Click a column title to sort.</span>')
        self.filter_text = w.Text(placeholder="filter: name, model, tag, note…", layout=w.Layout(width="220px"))
        self.filter_text.add_class("gft-run-filter")
        self.state_pick = w.Dropdown(options=[("all states", ALL_STATES)] + [(s, s) for s in STATES],
                                     value=ALL_STATES, layout=w.Layout(width="130px"))
        self.state_pick.add_class("gft-run-state-filter")
        self.count_label = w.HTML()
        self.count_label.add_class("gft-run-count")
        self.prev_button = w.Button(icon="chevron-left", tooltip="previous page", layout=w.Layout(width="36px"))
        self.next_button = w.Button(icon="chevron-right", tooltip="next page", layout=w.Layout(width="36px"))
        self.show_current_button = w.Button(description="Show current run", icon="crosshairs",
                                            layout=w.Layout(width="160px"))
        self.show_current_button.add_class("gft-show-current")
        w.link((self.filter_text, "value"), (m, "text_filter"))
        w.link((self.state_pick, "value"), (m, "state_filter"))
        self.prev_button.on_click(lambda _b: setattr(m, "page", m.page - 1))
        self.next_button.on_click(lambda _b: setattr(m, "page", m.page + 1))
        self.show_current_button.on_click(lambda _b: setattr(m, "selected", ()))

        self.all_columns = w.ToggleButton(description="All columns", icon="columns", value=False,
                                          tooltip="show every column; a narrow table then scrolls sideways",
                                          layout=w.Layout(width="130px"))
        self.all_columns.add_class("gft-all-columns")
        self.all_columns.observe(self._all_columns_changed, "value")
        self.controls = w.HBox([self.filter_text, self.state_pick, self.count_label, self.prev_button, self.next_button,
                                self.show_current_button, self.all_columns],
                               layout=w.Layout(flex_flow="row wrap", grid_gap="4px", align_items="center"))

    def _build_table(self, m: RunTableModel) -> None:
        """The header's sort buttons over a fixed pool of row widgets, in a box that fits them."""
        self.sort_buttons: dict[str, w.Button] = {}
        head = [w.HTML(layout=w.Layout(width=f"{CHECK_PX}px", margin="0"))]
        for key, title, px, _ in COLUMNS:
            b = w.Button(description=title, tooltip=f"sort by {title.lower()}",
                         layout=w.Layout(width=f"{px}px", margin="0", padding="0 2px"))
            b.add_class(f"gft-sort-{key}")
            b.add_class(f"gft-col-{key}")
            b.on_click(lambda _b, key=key: m.sort_by(key))
            self.sort_buttons[key] = b
            head.append(b)
        self.row_widgets = [_RowWidgets(self._toggled) for _ in range(m.page_size)]
        header = w.HBox(head)
        table = w.VBox([header] + [r.box for r in self.row_widgets])
        for part in (header, table):
            part.add_class("gft-runs-w")  # its width follows the columns shown (fit_style)
        # A narrow notebook hides columns (fit_style); narrower than the last level, it scrolls.
        style = w.HTML(fit_style(), layout=w.Layout(height="0px", margin="0", overflow="hidden"))
        self.table = w.Box([style, table], layout=w.Layout(overflow="auto hidden", width="100%",
                                                            flex_flow="column"))
        self.table.add_class("gft-run-table")
        self.table.add_class(FIT_CLASS)

    def _build_actions(self, m: RunTableModel) -> None:
        """What one ticked run offers: its note, its metrics as CSV, and delete with a confirmation."""
        self.selected_label = w.HTML()
        self.note_text = w.Text(placeholder="a note on this run", layout=w.Layout(flex="1 1 200px", min_width="120px"))
        self.note_text.add_class("gft-run-note")
        self.save_note_button = w.Button(description="Save note", icon="save", layout=w.Layout(width="110px"))
        self.save_note_button.add_class("gft-save-note")
        self.csv_button = w.Button(description="Metrics CSV", icon="download", layout=w.Layout(width="125px"))
        self.csv_button.add_class("gft-csv")
        self.delete_button = w.Button(description="Delete…", icon="trash", button_style="danger",
                                      layout=w.Layout(width="100px"))
        self.delete_button.add_class("gft-delete-run")
        self.confirm_delete_button = w.Button(description="Yes, delete", button_style="danger",
                                              layout=w.Layout(width="auto", min_width="110px"))
        self.confirm_delete_button.add_class("gft-delete-confirm")
        self.cancel_delete_button = w.Button(description="Cancel", layout=w.Layout(width="auto", min_width="80px"))
        self.cancel_delete_button.add_class("gft-delete-cancel")
        self.confirm_label = w.HTML()
        self.confirm_box = w.HBox([self.confirm_label, self.confirm_delete_button, self.cancel_delete_button],
                                  layout=w.Layout(display="none", flex_flow="row wrap", align_items="center",
                                                  grid_gap="4px"))
        self.csv_html = w.HTML()
        self.csv_html.add_class("gft-csv-output")
        self.message = w.HTML()
        self.message.add_class("gft-run-table-message")
        self.save_note_button.on_click(lambda _b: self._save_note())
        self.csv_button.on_click(lambda _b: self._csv())
        self.delete_button.on_click(lambda _b: self.selected and m.request_delete(self.selected[0]))
        self.confirm_delete_button.on_click(lambda _b: m.confirm_delete())
        self.cancel_delete_button.on_click(lambda _b: m.cancel_delete())
        self.actions = w.VBox([
            self.selected_label,
            w.HBox([self.note_text, self.save_note_button, self.csv_button, self.delete_button],
                   layout=w.Layout(flex_flow="row wrap", grid_gap="4px", align_items="center")),
            self.confirm_box, self.csv_html], layout=w.Layout(display="none"))
        self.actions.add_class("gft-run-actions")

    @property
    def selected(self) -> tuple[str, ...]:
        """The selected run folders, in the order they were selected."""
        return tuple(self.model.selected)

    def set_runs(self, statuses: Sequence[Any]) -> None:
        """Give the table the workspace's run statuses (see RunTableModel.set_runs)."""
        self.model.set_runs(statuses)

    def clear_selection(self) -> None:
        """Select no run."""
        self.model.selected = ()

    # -- drawing ----------------------------------------------------------------------------
    def render(self) -> None:
        """Draw the model's state: sort headers, the page of rows, the count, paging and actions."""
        m = self.model
        for key, title, _, _ in COLUMNS:
            text = title + ((" ▼" if m.descending else " ▲") if key == m.sort_key else "")
            if self.sort_buttons[key].description != text:
                self.sort_buttons[key].description = text
        rows = m.page_rows
        total, shown = len(m._all), len(m.rows)
        first = m.page * m.page_size
        count = (f"{first + 1:,}–{first + len(rows):,} of {shown:,}" if rows else "no runs")
        if shown != total:
            count += f" (filtered from {total:,})"
        _set(self.count_label, "value", f'<span style="color:#555">{count}</span>')
        _set(self.prev_button, "disabled", m.page <= 0)
        _set(self.next_button, "disabled", m.page >= m.pages - 1)
        self._quiet += 1
        try:
            for i, slot in enumerate(self.row_widgets):
                r = rows[i] if i < len(rows) else None
                slot.run_dir = r.run_dir if r else ""
                _set(slot.box.layout, "display", None if r else "none")
                if r is not None:
                    if slot.row is not r:  # rows are rebuilt when they change: same row, same cells
                        slot.row = r
                        _set(slot.cells, "value", row_html(r))
                    _set(slot.check, "value", r.run_dir in m.selected)
        finally:
            self._quiet -= 1
        self._render_actions()

    def _render_actions(self) -> None:
        m = self.model
        one = m.row(m.selected[0]) if len(m.selected) == 1 else None
        _set(self.actions.layout, "display", None if one is not None else "none")
        if one is not None:
            _set(self.selected_label, "value", f"<b>{fmt.esc(one.name)}</b> {fmt.badge(one.state)}")
            if self._shown_selection != m.selected:
                self.note_text.value = one.note
                self.csv_html.value = ""
        confirming = m.confirming_delete
        _set(self.confirm_box.layout, "display", None if confirming else "none")
        if confirming:
            _set(self.confirm_label, "value",
                 f"Delete <b>{fmt.esc(os.path.basename(confirming))}</b> and every file in it?")
        _set(self.delete_button, "disabled", bool(confirming))
        if len(m.selected) >= 2:
            _set(self.diff_html, "value", diff_html(m.diff(), list(m.selected_configs())))
        self._shown_selection = m.selected

    def show_overlay(self, series: list[tuple], max_points: int = plots.MAX_POINTS) -> None:
        """Draw the selected runs' curves on one figure; with two or more, it and the config diff are shown."""
        self.overlay_lines = plots.set_overlay(self.overlay_figure, series, max_points)
        extra = (self.overlay_figure, self.diff_html) if len(series) >= 2 else ()
        if self.children != self._base + extra:
            self.children = self._base + extra

    def say(self, html: str) -> None:
        """Show an action's answer under the table."""
        self.message.value = html

    # -- events -----------------------------------------------------------------------------
    def _all_columns_changed(self, change) -> None:
        # Without the container, no query matches: every column shows and the box scrolls.
        (self.table.remove_class if change["new"] else self.table.add_class)(FIT_CLASS)

    def _toggled(self, slot: _RowWidgets, on: bool) -> None:
        if not self._quiet and slot.run_dir:
            self.model.toggle(slot.run_dir, on)

    def _selection_changed(self, change) -> None:
        self.message.value = ""
        if self.model.confirming_delete and self.model.confirming_delete not in self.model.selected:
            self.model.cancel_delete()
        self.render()
        if self.on_select is not None:
            self.on_select(self.selected)

    def _save_note(self) -> None:
        if len(self.selected) != 1:
            return
        try:
            self.model.set_note(self.selected[0], self.note_text.value)
        except RunError as e:
            self.say(fmt.note(f"Note not saved: {fmt.esc(e)}", "error"))
            return
        self.say(fmt.note("Note saved.", "ok"))

    def _csv(self) -> None:
        if len(self.selected) != 1:
            return
        try:
            self.csv_html.value = csv_link(self.selected[0])
        except OSError as e:
            self.say(fmt.note(f"No CSV: {fmt.esc(e)}", "error"))


def _set(obj: Any, name: str, value: Any) -> None:
    """Set a trait only when it changes (each change is a message to the browser)."""
    if getattr(obj, name) != value:
        setattr(obj, name, value)
