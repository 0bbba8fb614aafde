"""ControlPanel: the notebook view of a workspace. It shows, by state, the config form (IDLE),
the dashboard (STARTING / RUNNING / STOPPING), the outcome of an ended run (FINISHED /
ABORTED / FAILED) or a warning for an ORPHANED one, plus the run history and a playground.

It is only a view of what `runs.RunManager` reports: building a panel while a run is active
(a second tab, a new kernel) shows the same run with its whole history. A background thread
(`poller.Poller`) refreshes it about once a second, reading only appended metrics; it sets
widget traits and nothing else, and stops when the panel is closed. Buttons that take time
(start, stop, resume, clean, sample) run in worker threads so the kernel stays responsive.

This module is the layout and the drawing of one poll's snapshot; what to show and the
workers are ui/controller.py's, the buttons' handlers ui/panel_actions.py's.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ipywidgets as w
import traitlets as t

from .. import contract
from ..config import sample_dataset_path
from ..runs import RunManager
from ..runs.warm_sampler import WarmSamplers
from . import fmt, layout, plots
from .controller import PanelController, Snapshot
from .dashboard import Dashboard
from .form import ConfigForm
from .outcome import OutcomeView
from .panel_actions import PanelActions
from .playground import Playground
from .poller import Poller
from .queue_view import QueueView
from .run_table import RunTable
from .run_table_model import overlay_series
from .scroll import ScrollToView
from .state_table import look
from .toast import ToastBanner

MESSAGE_COLOURS = {"info": "#333", "ok": "#1b5e20", "warn": "#e65100", "error": "#b71c1c"}


class ControlPanel(w.VBox):
    """The control panel widget; display it (last expression of a cell, or `display(...)`).

    ControlPanel(workspace=None, poll=True, poll_interval=1.0, trainer=None, manager=None)

    See `gemma_ft_widgets.ui` for the names of its parts.
    """

    state = t.Unicode("IDLE", help="state of the run shown; IDLE while the form is shown")
    view = t.Unicode("loading", help="loading (before the first poll) | form | dashboard | finished | "
                                    "failed | orphaned")
    run_dir = t.Unicode("", help="folder of the run shown ('' with the form)")
    run_name = t.Unicode("")
    active_run = t.Unicode("", help="folder of the workspace's active run, '' when none")
    poll_interval = t.Float(1.0, help="seconds between polls")

    def __init__(self, workspace: str | os.PathLike | None = None, *, poll: bool = True,
                 poll_interval: float = 1.0, trainer: str | None = None,
                 manager: RunManager | None = None, max_points: int = plots.MAX_POINTS,
                 stop_timeout: float = 30.0, defaults: dict[str, Any] | None = None, **kwargs):
        from ..colab import enable_colab_widgets

        enable_colab_widgets()  # bqplot needs Colab's custom widget manager; says so once
        self.manager = manager or RunManager(workspace, trainer=trainer)
        self.workspace = self.manager.workspace
        self.max_points = max_points
        self.stop_timeout = stop_timeout
        self.controller = PanelController(self.manager, on_done=self.request_refresh, on_note=self._show_messages)
        self.actions = PanelActions(self)
        self._closed = False
        self._drawn: dict[str, Any] = {}  # what the dashboard shows: run_dir -> series.version
        self._overlay_key: tuple | None = None
        self._message_of: tuple = ("", None)  # (run_dir, attempt) the dashboard's message is about
        self._any_runs = False  # the last poll listed runs
        self.polls = 0
        self.poll_errors = 0
        self._build_views(defaults)
        self._build_chrome()
        self._wire()
        super().__init__([layout.style(), layout.row([self.title, self.active_label], align="center", gap="0 16px"),
                          self.toast, self.scroller, self.body, self.sections, self.message_log], **kwargs)
        self.add_class("gft-panel")
        self.poll_interval = poll_interval
        self.view = "loading"
        self._start_polling(poll)

    def _build_views(self, defaults: dict[str, Any] | None) -> None:
        """The form, dashboard, outcome, run table, playground and queue, wired to the actions."""
        a = self.actions
        form_defaults = {}
        try:
            if os.path.isfile(sample_dataset_path()):
                form_defaults["dataset"] = sample_dataset_path()
        except Exception:  # noqa: BLE001 - no sample dataset: the field starts empty
            pass
        form_defaults.update(defaults or {})
        self.form = ConfigForm(os.path.join(self.workspace, contract.UPLOADS_DIR), on_start=a.start,
                               workspace=self.workspace, defaults=form_defaults, on_queue=a.enqueue)
        self.dashboard = Dashboard(on_stop=a.stop, on_force=a.force, on_restore_lock=a.restore_lock)
        self.outcome = OutcomeView(on_export=a.export)
        self.history = RunTable(on_select=a.selected, on_delete=a.delete)
        self.playground = Playground(on_generate=a.generate)
        self.samplers = WarmSamplers(self.workspace)  # the playground's warm processes; closed with the panel
        self.queue_view = QueueView(on_remove=a.queue_remove, on_pause=a.queue_pause, on_resume=a.queue_resume)

    def _build_chrome(self) -> None:
        """The header, the body that holds one view, the sections, the toast and message log."""
        self.title = w.HTML(title_html(self.workspace), layout=w.Layout(flex="1 1 20em", min_width="0",
                                                                         overflow="hidden"))
        self.title.add_class("gft-title")
        self.active_label = w.HTML()
        self.active_label.add_class("gft-active-run")
        layout.keep_size(self.active_label)
        self.run_view = w.VBox([self.outcome, self.dashboard])
        self.run_view.add_class("gft-run-view")
        self.loading = w.HTML('<span style="color:#666"><i class="fa fa-spinner fa-spin"></i> '
                              'Reading the workspace…</span>')
        self.loading.add_class("gft-loading")
        self.body = w.VBox([self.loading])
        self.body.add_class("gft-body")
        self.scroller = ScrollToView()  # a switch of view brings the new one into sight
        self.sections = w.Accordion(children=[self.history, self.playground, self.queue_view],
                                    titles=("Runs", "Playground", "Queue (0)"), selected_index=None)
        self.sections.add_class("gft-sections")
        self.toast = ToastBanner()  # the extension's toasts, where there is no extension
        self.message_log = w.HTML(layout=w.Layout(display="none"))
        self.message_log.add_class("gft-panel-log")

    def _wire(self) -> None:
        a = self.actions
        self.outcome.new_run_button.on_click(a.new_run)
        self.outcome.resume_button.on_click(a.resume)
        self.outcome.clean_button.on_click(a.clean)
        self.outcome.playground_button.on_click(lambda _b: setattr(self.sections, "selected_index", 1))
        self.form.back_button.on_click(a.back)
        self.dashboard.log_stream.observe(lambda _c: self.request_refresh(), "value")

    def _start_polling(self, poll: bool) -> None:
        # Views of this panel in the front end. A panel whose views all went away (its cell was
        # re-run or cleared) pauses its polling until one is shown again. Counting is turned on
        # only with a kernel; a front end that never reports views never pauses the panel.
        self._seen_view = False
        self.observe(self._views_changed, "_view_count")
        if self.comm is not None:
            self._view_count = 0
        self._poller = None
        if poll:  # the first poll too runs in the thread: a long history never blocks the cell
            self._poller = Poller(self._tick, lambda: self.poll_interval, self._poll_failed,
                                  name=f"gft-poller-{id(self):x}").start()
        else:
            self.refresh()

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether the panel was closed."""
        return self._closed

    @property
    def polling(self) -> bool:
        """Whether the panel's poller thread is running."""
        return self._poller is not None and self._poller.alive

    @property
    def _series(self):
        """The controller's cache of curves, by run folder (tests look into it)."""
        return self.controller.series

    def close(self) -> None:
        """Stop the poller and close every widget of the panel (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.stop()
        self.samplers.close()
        with self.controller.lock:
            roots = [self, self.form, self.run_view, self.dashboard, self.outcome, self.history,
                     self.history.overlay_figure, self.history.diff_html, self.playground, self.body, self.loading,
                     *self.dashboard.curves.scales]  # the loss scale not in use (linear / log)
            for widget in _widget_tree(roots):
                w.Widget.close(widget)
            self.controller.series.clear()

    def wait_actions(self, timeout: float = 60.0) -> bool:
        """Wait for the buttons' worker threads (tests and scripts). True when all ended."""
        return self.controller.wait(timeout)

    # -- polling ----------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        """True while every view of a once-displayed panel is gone: polls are skipped."""
        return self._seen_view and self._view_count == 0

    def _views_changed(self, change) -> None:
        if (change["new"] or 0) > 0:
            self._seen_view = True
            if self._poller is not None:
                self._poller.kick()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait for the first poll (a polling panel does it in its thread)."""
        deadline = time.monotonic() + timeout
        while self.polls == 0 and not self._closed and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.polls > 0

    def _tick(self) -> None:
        if not self.paused:
            self.refresh()

    def _poll_failed(self, error: BaseException) -> None:
        self.poll_errors += 1
        self.note(f"refresh failed: {type(error).__name__}: {error}", "error")

    def request_refresh(self) -> None:
        """A poll now: on the poller's thread when it runs, else here."""
        if self._closed:
            return
        if self._poller is not None and self._poller.alive:
            self._poller.kick()
        else:
            self.refresh()

    def refresh(self) -> None:
        """One synchronous poll: read the workspace and update every view."""
        if self._closed:
            return
        with self.controller.lock:
            if self._closed:
                return
            self._draw(self.controller.poll())
            self.polls += 1

    def navigate(self, mode: str, pinned: str = "") -> None:
        """Switch what the panel shows. Runs on the kernel's main thread (a click), so it never
        waits for a poll in progress: the form is shown at once when the panel is free, and
        anything else on the poller's next (immediate) tick."""
        self.controller.navigate(mode, pinned)
        if mode == "form" and self.controller.lock.acquire(timeout=0.05):
            try:
                self._show_form()
            finally:
                self.controller.lock.release()
        self.request_refresh()

    # -- drawing a snapshot -----------------------------------------------------------------
    def _draw(self, snap: Snapshot) -> None:
        ws = snap.workspace
        self.toast.watch(ws)
        if self.active_run != snap.active:
            self.active_run = snap.active
        active_name = os.path.basename(snap.active) if snap.active else ""
        if self.form.active_run != active_name:
            self.form.active_run = active_name
        label = (f"active: <b>{fmt.esc(active_name)}</b> {fmt.badge(ws.state)}" if snap.active else "")
        if self.active_label.value != label:
            self.active_label.value = label
        self.history.set_runs(snap.runs)
        self._show_queue(snap)
        self._any_runs = bool(snap.runs)
        if snap.shown is None:
            self._show_form()
        else:
            self._show_run(snap.shown)
        self._show_overlay()
        self.playground.set_run(self.controller.playground_run(snap))
        sampling = self.controller.sampling_phase()
        if sampling is not None:  # the seconds a Generate has taken so far
            self.playground.progress.value = f'<i class="fa fa-spinner fa-spin"></i> {fmt.esc(sampling)}'

    def _show_queue(self, snap: Snapshot) -> None:
        if snap.queue_error:
            self.queue_view.summary.value = fmt.note(fmt.esc(snap.queue_error), "error")
        if snap.queue is None:
            return
        self.queue_view.show(snap.queue)
        title = QueueView.title(snap.queue)
        if self.sections.get_title(2) != title:
            self.sections.set_title(2, title)

    def _show_form(self) -> None:
        self._set_body(self.form)
        back = self.controller.mode == "form" and self._any_runs  # a run to go back to
        self.form.back_button.layout.display = None if back else "none"
        self._set_traits(state="IDLE", view="form", run_dir="", run_name="")

    def _show_run(self, st) -> None:
        state = fmt.state_value(st.state)
        run_dir = st.run_dir or ""
        series = self.controller.read_series(run_dir) if run_dir else None
        d = self.dashboard
        if (run_dir, st.attempt) != self._message_of and d.message.value:
            d.message.value = ""  # a stop report of the run, or of the attempt, shown before
        self._message_of = (run_dir, st.attempt)
        if series is None or self._drawn.get("run") != run_dir or self._drawn.get("version") != series.version:
            d.show_curves(series, self.max_points)
            self._drawn = {"run": run_dir, "version": series.version if series else -1}
        d.show_status(st, series)
        d.set_controls(state, self.controller.stop_settled(state), can_stop=not st.foreign_host)
        self.outcome.show(st, self._show_logs(st), busy=self.controller.busy("resume", "clean"))
        self._set_body(self.run_view)
        self._set_traits(state=state, view=look(state).view, run_dir=run_dir, run_name=st.run_name or "")

    def _show_logs(self, st) -> str:
        """The shown run's logs on the dashboard; returns stderr's tail (FAILED runs)."""
        if not st.run_dir:
            self.dashboard.show_logs("", st.reason or "")
            return ""
        logs = self.controller.logs(st, self.dashboard.log_stream.value)
        if logs is not None:
            transitions, text, _ = logs
            self.dashboard.show_logs(transitions, text)
        return self.controller.stderr_tail

    def _set_traits(self, **values: str) -> None:
        for name, value in values.items():
            if getattr(self, name) != value:
                setattr(self, name, value)

    def _set_body(self, widget: w.Widget) -> None:
        if self.body.children != (widget,):
            switched = self.body.children != (self.loading,)  # not the first view drawn
            self.body.children = (widget,)
            if switched:
                self.scroller.request()

    def _show_overlay(self) -> None:
        """The loss curves of two or more runs selected in the run table, on one figure."""
        selected = [d for d in self.history.selected if d]
        if len(selected) < 2:
            if self._overlay_key is not None:
                self.history.show_overlay([])
                self._overlay_key = None
            return
        read = self.controller.read_many(selected)
        key = tuple((d, s.version) for d, s in read.items())
        if key != self._overlay_key:
            self.history.show_overlay(overlay_series(selected, read.get), self.max_points)
            self._overlay_key = key

    # -- messages ---------------------------------------------------------------------------
    def note(self, text: str, kind: str = "info") -> None:
        """Add a line to the panel's own message log (shown at the bottom)."""
        self.controller.note(text, kind)

    def _show_messages(self) -> None:
        self.message_log.value = messages_html(list(self.controller.messages))
        self.message_log.layout.display = None

    @property
    def messages(self) -> list[str]:
        """The texts of the panel's message log, oldest first."""
        return [m for _, m, _, _ in self.controller.messages]


def title_html(workspace: str) -> str:
    """The header. A long workspace path is cut with an ellipsis (the whole path in its
    tooltip), so the header stays one line in a narrow notebook."""
    return ('<div style="display:flex;align-items:baseline;gap:0.3em;white-space:nowrap;max-width:100%">'
            '<b style="font-size:1.1em">Gemma fine-tuning</b><span style="color:#666">· workspace</span>'
            f'<code title="{fmt.esc(workspace)}" style="min-width:0;max-width:46ch;overflow:hidden;'
            f'text-overflow:ellipsis;direction:rtl">&lrm;{fmt.esc(workspace)}&lrm;</code></div>')


def messages_html(messages: list[tuple[str, str, str, int]]) -> str:
    """The message log: (stamp, text, kind, times) per line, every line in the colour of the
    newest one's kind (as it always was)."""
    colour = MESSAGE_COLOURS[messages[-1][2]]
    lines = [f'<div style="color:{colour}">{s} {fmt.esc(m)}' + (f" (×{n})" if n > 1 else "") + "</div>"
             for s, m, _, n in messages]
    return '<div style="font-size:0.85em">' + "".join(lines) + "</div>"


def _widget_tree(roots: list[w.Widget]) -> list[w.Widget]:
    """Every widget reachable from `roots` through synced traits (children, marks, layout…)."""
    seen: dict[int, w.Widget] = {}
    stack = list(roots)
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen[id(widget)] = widget
        for name in widget.keys:
            try:
                value = getattr(widget, name)
            except Exception:  # noqa: BLE001
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, w.Widget) and id(item) not in seen:
                    stack.append(item)
    return list(seen.values())
