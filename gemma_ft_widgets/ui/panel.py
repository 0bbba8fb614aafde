"""ControlPanel: the notebook view of a workspace. It shows, by state, the config form (IDLE),
the dashboard (STARTING / RUNNING / STOPPING), the outcome of an ended run (FINISHED /
ABORTED / FAILED) or a warning for an ORPHANED one, plus the run history and a playground.

It is only a view of what `runs.RunManager` reports: building a panel while a run is active
(a second tab, a new kernel) shows the same run with its whole history. A background thread
(`poller.Poller`) refreshes it about once a second, reading only appended metrics; it sets
widget traits and nothing else, and stops when the panel is closed. Buttons that take time
(start, stop, resume, clean, sample) run in worker threads so the kernel stays responsive.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from .. import contract
from ..config import ConfigError, TrainingConfig, sample_dataset_path
from ..runs import RunError, RunManager, State
from ..runs import queue as runqueue
from ..runs.results import stderr_tail
from ..runs.warm_sampler import WarmSamplers
from . import fmt, layout, plots
from .dashboard import Dashboard
from .form import ConfigForm
from .outcome import OutcomeView
from .playground import Playground
from .poller import Poller
from .queue_view import QueueView
from .run_table import RunTable
from .run_table_model import overlay_series
from .scroll import ScrollToView
from .series import RunSeries
from .toast import ToastBanner

VIEW_BY_STATE = {"STARTING": "dashboard", "RUNNING": "dashboard", "STOPPING": "dashboard",
                 "FINISHED": "finished", "ABORTED": "finished", "FAILED": "failed", "ORPHANED": "orphaned"}
ACTIVE = ("STARTING", "RUNNING", "STOPPING")
LOG_LINES = 200
SERIES_CACHE = 8
MESSAGES = 6


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
        self._lock = threading.RLock()
        self._closed = False
        self._mode = "auto"  # auto: follow the workspace | form: New run | run: a pinned run
        self._pinned = ""
        self._last_active: str | None = None
        self._series: collections.OrderedDict[str, RunSeries] = collections.OrderedDict()
        self._drawn: dict[str, int] = {}  # what the dashboard shows: run_dir -> series.version
        self._logs_key: tuple | None = None
        self._stderr_tail = ""
        self._overlay_key: tuple | None = None
        self._statuses: list = []
        self._stop_in_flight = False
        self._message_of: tuple = ("", None)  # (run_dir, attempt) the dashboard's message is about
        self._workers: set[threading.Thread] = set()
        self._messages: collections.deque = collections.deque(maxlen=MESSAGES)
        self.polls = 0
        self.poll_errors = 0

        form_defaults = {}
        try:
            if os.path.isfile(sample_dataset_path()):
                form_defaults["dataset"] = sample_dataset_path()
        except Exception:  # noqa: BLE001
            pass
        form_defaults.update(defaults or {})
        self.form = ConfigForm(os.path.join(self.workspace, contract.UPLOADS_DIR), on_start=self._start,
                               workspace=self.workspace,
                               defaults=form_defaults, on_queue=self._enqueue)
        self.dashboard = Dashboard(on_stop=self._stop, on_force=self._force, on_restore_lock=self._restore_lock)
        self.outcome = OutcomeView(on_export=self._export)
        self.history = RunTable(on_select=self._selected, on_delete=self._delete)
        self.playground = Playground(on_generate=self._generate)
        self.samplers = WarmSamplers(self.workspace)  # the playground's warm processes; closed with the panel
        self.queue_view = QueueView(on_remove=self._queue_remove, on_pause=self._queue_pause,
                                    on_resume=self._queue_resume)

        # A long workspace path is cut with an ellipsis (the whole path in its tooltip), so
        # the header stays one line in a narrow notebook.
        self.title = w.HTML(f'<div style="display:flex;align-items:baseline;gap:0.3em;white-space:nowrap;max-width:100%">'
                            '<b style="font-size:1.1em">Gemma fine-tuning</b><span style="color:#666">· workspace</span>'
                            f'<code title="{fmt.esc(self.workspace)}" style="min-width:0;max-width:46ch;overflow:hidden;'
                            f'text-overflow:ellipsis;direction:rtl">&lrm;{fmt.esc(self.workspace)}&lrm;</code></div>',
                            layout=w.Layout(flex="1 1 20em", min_width="0", overflow="hidden"))
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

        self.outcome.new_run_button.on_click(self._new_run)
        self.outcome.resume_button.on_click(self._resume)
        self.outcome.clean_button.on_click(self._clean)
        self.outcome.playground_button.on_click(lambda _b: setattr(self.sections, "selected_index", 1))
        self.form.back_button.on_click(self._back)
        self.dashboard.log_stream.observe(lambda _c: self._request_refresh(), "value")

        super().__init__([layout.style(), layout.row([self.title, self.active_label], align="center", gap="0 16px"),
                          self.toast, self.scroller, self.body, self.sections, self.message_log], **kwargs)
        self.add_class("gft-panel")
        self.poll_interval = poll_interval
        self.view = "loading"
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
        return self._closed

    @property
    def polling(self) -> bool:
        return self._poller is not None and self._poller.alive

    def close(self) -> None:
        """Stop the poller and close every widget of the panel (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.stop()
        self.samplers.close()
        with self._lock:
            roots = [self, self.form, self.run_view, self.dashboard, self.outcome, self.history,
                     self.history.overlay_figure, self.history.diff_html, self.playground, self.body, self.loading,
                     *self.dashboard.curves.scales]  # the loss scale not in use (linear / log)
            for widget in _widget_tree(roots):
                w.Widget.close(widget)
            self._series.clear()

    def wait_actions(self, timeout: float = 60.0) -> bool:
        """Wait for the buttons' worker threads (tests and scripts). True when all ended."""
        deadline = time.monotonic() + timeout
        while True:
            workers = [th for th in list(self._workers) if th.is_alive()]
            if not workers:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            workers[0].join(min(left, 0.2))

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

    def _request_refresh(self) -> None:
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
        with self._lock:
            if self._closed:
                return
            self._refresh()
            self.polls += 1

    def _refresh(self) -> None:
        ws = self._workspace_status()
        self.toast.watch(ws)
        active = ws.run_dir if (ws.active and ws.run_dir) else ""
        if active and active != self._last_active:  # a run started, here or elsewhere: follow it
            self._mode, self._pinned = "auto", ""
        self._last_active = active
        if self.active_run != active:
            self.active_run = active
        active_name = os.path.basename(active) if active else ""
        if self.form.active_run != active_name:
            self.form.active_run = active_name
        label = (f"active: <b>{fmt.esc(active_name)}</b> {fmt.badge(ws.state)}" if active else "")
        if self.active_label.value != label:
            self.active_label.value = label

        self._statuses = self._runs()
        self.history.set_runs(self._statuses)
        self._refresh_queue(ws)
        shown = self._shown(ws)
        if shown is None:
            self._show_form()
        else:
            self._show_run(shown)
        self._refresh_overlay()
        self.playground.set_run(self._playground_run(shown))

    def _refresh_queue(self, ws) -> None:
        """Show the queue; start its head if the slot is free (a supervisor that died before
        it could advance the queue leaves that to whoever looks next)."""
        if not os.path.isdir(self.workspace):
            return
        try:
            q = runqueue.read(self.workspace)
        except RunError as e:
            self.queue_view.summary.value = fmt.note(fmt.esc(e), "error")
            return
        if q.entries and not q.paused:
            q.blocked = runqueue.blocking_reason(self.manager, ws) or ""
            if not q.blocked and not self._workers_named("queue"):
                self._spawn("queue", self.manager.queue.advance)
        self.queue_view.show(q)
        title = QueueView.title(q)
        if self.sections.get_title(2) != title:
            self.sections.set_title(2, title)

    def _enqueue(self, config: TrainingConfig, grid: list[str] | None = None) -> None:
        """Queue the form's config, or with a sweep grid one run per point, as a group."""
        def work():
            try:
                if grid:
                    entries = self._enqueue_sweep(config, grid)
                    text = f"Queued a sweep of {len(entries)} runs as group {fmt.esc(entries[0].group)}."
                else:
                    entry = self.manager.queue.add(config)
                    text = f"Queued {fmt.esc(entry.id)} ({fmt.esc(entry.label())})."
            except ConfigError as e:
                self.form.show_config_error(e)
                self.form.message.value = fmt.note("Not queued: " + "; ".join(
                    fmt.esc(str(err)) for err in e.errors[:5]), "error")
                return
            except RunError as e:
                self.form.message.value = fmt.note(f"Not queued: {fmt.esc(e)}", "error")
                return
            self.form.message.value = fmt.note(text, "ok")
            self.note(text, "ok")

        self._spawn("enqueue", work)

    def _enqueue_sweep(self, config: TrainingConfig, grid: list[str]) -> list:
        from .. import sweep

        parsed = sweep.parse_grid(grid)
        n = sweep.size(parsed)
        if n > sweep.MAX_POINTS:
            raise RunError(f"the grid has {n} points (more than {sweep.MAX_POINTS}); "
                           "queue it from a terminal with gemma-ft sweep --yes")
        points = sweep.points(config.to_dict(), parsed)
        group = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        return self.manager.queue.add_many([c for _, c in points], [sweep.point_name(group, p) for p, _ in points],
                                           group=group)

    def _queue_action(self, name: str, fn: Callable[[], Any]) -> None:
        def work():
            try:
                fn()
            except RunError as e:
                self.note(str(e), "error")
            self._request_refresh()

        self._spawn(f"queue-{name}", work)

    def _queue_remove(self, entry_id: str) -> None:
        self._queue_action("remove", lambda: self.manager.queue.remove(entry_id))

    def _queue_pause(self) -> None:
        self._queue_action("pause", self.manager.queue.pause)

    def _queue_resume(self) -> None:
        self._queue_action("resume", self.manager.queue.resume)

    def _workspace_status(self):
        if not os.path.isdir(self.workspace):  # nothing was ever started here
            return _Idle()
        return self.manager.status()

    def _runs(self) -> list:
        if not os.path.isdir(self.workspace):
            return []
        return self.manager.runs()

    def _shown(self, ws):
        if self._mode == "form":
            return None
        if self._mode == "run" and self._pinned:
            for st in self._statuses:
                if st.run_dir == self._pinned:
                    return st
            try:
                return self.manager.status(self._pinned)
            except RunError:  # deleted meanwhile
                self._mode, self._pinned = "auto", ""
        if ws.state == State.IDLE or fmt.state_value(ws.state) == "IDLE":
            return None
        return ws

    def _show_form(self) -> None:
        self._set_body(self.form)
        self.form.back_button.layout.display = None if (self._mode == "form" and self._statuses) else "none"
        for name, value in (("state", "IDLE"), ("view", "form"), ("run_dir", ""), ("run_name", "")):
            if getattr(self, name) != value:
                setattr(self, name, value)

    def _show_run(self, st) -> None:
        state = fmt.state_value(st.state)
        run_dir = st.run_dir or ""
        series = self._series_for(run_dir) if run_dir else None
        if series is not None:
            series.read(self._resolved_run_dir(run_dir))
        d = self.dashboard
        if (run_dir, st.attempt) != self._message_of and d.message.value:
            d.message.value = ""  # a stop report of the run, or of the attempt, shown before
        self._message_of = (run_dir, st.attempt)
        if series is None or self._drawn.get("run") != run_dir or self._drawn.get("version") != series.version:
            d.show_curves(series, self.max_points)
            self._drawn = {"run": run_dir, "version": series.version if series else -1}
        d.show_status(st, series)
        if state not in ACTIVE and not self._workers_named("stop", "force"):
            self._stop_in_flight = False
        d.set_controls(state, self._stop_in_flight, can_stop=not st.foreign_host)
        stderr_tail = self._show_logs(st, state)
        self.outcome.show(st, stderr_tail, busy=bool(self._workers_named("resume", "clean")))
        self._set_body(self.run_view)
        view = VIEW_BY_STATE.get(state, "dashboard")
        for name, value in (("state", state), ("view", view), ("run_dir", run_dir),
                            ("run_name", st.run_name or "")):
            if getattr(self, name) != value:
                setattr(self, name, value)

    def _show_logs(self, st, state: str) -> str:
        """Logs of the shown run; an ended run's logs are read once, not every poll."""
        if not st.run_dir:
            self.dashboard.show_logs("", st.reason or "")
            return ""
        stream = self.dashboard.log_stream.value
        key = (st.run_dir, state, stream, st.attempt)
        if state in ACTIVE or key != self._logs_key:
            transitions = self.manager.logs(st.run_dir, "status", 50)
            text = self.manager.logs(st.run_dir, stream, LOG_LINES)
            self._stderr_tail = ("\n".join(stderr_tail(st.run_dir, st.stderr_offset).splitlines()[-40:])
                                 if state == "FAILED" else "")
            self.dashboard.show_logs(transitions, text)
            self._logs_key = key
        return self._stderr_tail

    def _set_body(self, widget: w.Widget) -> None:
        if self.body.children != (widget,):
            switched = self.body.children != (self.loading,)  # not the first view drawn
            self.body.children = (widget,)
            if switched:
                self.scroller.request()

    def _resolved_run_dir(self, run_dir: str) -> str:
        """The run's folder, resolved in the workspace (RunError when it is not there):
        RunSeries.read finds metrics.jsonl in it."""
        return self.manager.resolve(run_dir)

    def _series_for(self, run_dir: str) -> RunSeries:
        series = self._series.get(run_dir)
        if series is None:
            series = self._series[run_dir] = RunSeries(run_dir)
            while len(self._series) > SERIES_CACHE:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(run_dir)
        return series

    def _refresh_overlay(self) -> None:
        selected = [d for d in self.history.selected if d]
        if len(selected) < 2:
            if self._overlay_key is not None:
                self.history.show_overlay([])
                self._overlay_key = None
            return
        read = {}
        for run_dir in selected:
            series = self._series_for(run_dir)
            try:
                series.read(self._resolved_run_dir(run_dir))
            except RunError:
                continue
            read[run_dir] = series
        key = tuple((d, s.version) for d, s in read.items())
        if key != self._overlay_key:
            self.history.show_overlay(overlay_series(selected, read.get), self.max_points)
            self._overlay_key = key

    def _playground_run(self, shown):
        if shown is not None:  # the run shown (or selected in the history)
            return shown
        for st in self._statuses:  # the form is shown: the newest run with a checkpoint
            if st.last_checkpoint:
                return st
        return None

    # -- messages ---------------------------------------------------------------------------
    def note(self, text: str, kind: str = "info") -> None:
        """Add a line to the panel's own message log (shown at the bottom)."""
        stamp = time.strftime("%H:%M:%S")
        if self._messages and self._messages[-1][1] == text:
            self._messages[-1] = (stamp, text, kind, self._messages[-1][3] + 1)
        else:
            self._messages.append((stamp, text, kind, 1))
        colour = {"info": "#333", "ok": "#1b5e20", "warn": "#e65100", "error": "#b71c1c"}[kind]
        lines = [f'<div style="color:{colour}">{s} {fmt.esc(m)}' + (f" (×{n})" if n > 1 else "") + "</div>"
                 for s, m, kind, n in self._messages]
        self.message_log.value = '<div style="font-size:0.85em">' + "".join(lines) + "</div>"
        self.message_log.layout.display = None

    @property
    def messages(self) -> list[str]:
        return [m for _, m, _, _ in self._messages]

    # -- actions (worker threads) -----------------------------------------------------------
    def _spawn(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - shown, never raised into the kernel
                self.note(f"{name} failed: {type(e).__name__}: {e}", "error")
            finally:
                self._workers.discard(threading.current_thread())
                try:
                    self._request_refresh()
                except Exception as e:  # noqa: BLE001
                    self.note(f"refresh failed: {e}", "error")

        th = threading.Thread(target=run, name=f"gft-{name}", daemon=True)
        self._workers.add(th)
        th.start()
        return th

    def _workers_named(self, *names: str) -> bool:
        return any(th.name in {f"gft-{n}" for n in names} and th.is_alive() for th in list(self._workers))

    def _start(self, config: TrainingConfig, start_anyway: bool = False) -> None:
        self.form.busy = True
        self.form.message.value = fmt.note("Starting…", "info")

        def work():
            try:
                run = self.manager.start(config, start_anyway=start_anyway)
            except ConfigError as e:
                self.form.show_config_error(e)
                self.form.message.value = fmt.note("The config has errors; see the fields above.", "error")
                return
            except RunError as e:
                self.form.message.value = fmt.note(f"Not started: {fmt.esc(e)}", "error")
                return
            finally:
                self.form.busy = False
            with self._lock:
                self._mode, self._pinned = "auto", ""
                self.history.clear_selection()
            self.form.message.value = fmt.note(f"Started {fmt.esc(run.name)}.", "ok")
            self.note(f"started {run.name}", "ok")

        self._spawn("start", work)

    def _stop(self) -> None:
        self._stop_in_flight = True
        self.dashboard.message.value = ""

        def work():
            try:
                report = self.manager.stop(force=False, timeout=self.stop_timeout)
                self.dashboard.message.value = fmt.note(fmt.esc(fmt.stop_message(report)), "info")
                self.note(fmt.stop_message(report))
            finally:
                self._stop_in_flight = False

        self._spawn("stop", work)

    def _restore_lock(self) -> None:
        run_dir = self.run_dir

        def work():
            try:
                text = self.manager.restore_lock(run_dir or None)
            except RunError as e:
                self.dashboard.message.value = fmt.note(f"Lock not restored: {fmt.esc(e)}", "error")
                return
            self.dashboard.message.value = fmt.note(fmt.esc(text), "ok")
            self.note(text, "ok")

        self._spawn("restore-lock", work)

    def _force(self) -> None:
        self._stop_in_flight = True

        def work():
            # RunManager.stop(force=True) never waits behind the graceful stop still running.
            report = self.manager.stop(force=True, timeout=self.stop_timeout)
            self.dashboard.message.value = fmt.note(fmt.esc(fmt.stop_message(report)), "warn")
            self.note(fmt.stop_message(report), "warn")

        self._spawn("force", work)

    def _resume(self, _b=None) -> None:
        run_dir = self.run_dir
        checkpoint = self.outcome.checkpoint_picker.value or None

        def work():
            try:
                run = self.manager.resume(run_dir or None, checkpoint=checkpoint)
            except RunError as e:
                self.note(str(e), "error")
                self.outcome.say(fmt.note(f"Not resumed: {fmt.esc(e)}", "error"))
                return
            with self._lock:
                self._mode, self._pinned = "auto", ""
            self.note(f"resumed {run.name}", "ok")

        self.outcome.resume_button.disabled = True
        self._spawn("resume", work)

    def _clean(self, _b=None) -> None:
        def work():
            try:
                self.note(self.manager.clean(), "ok")
            except RunError as e:
                self.note(str(e), "error")
                self.outcome.say(fmt.note(f"Not cleaned up: {fmt.esc(e)}", "error"))

        self.outcome.clean_button.disabled = True
        self._spawn("clean", work)

    def _new_run(self, _b=None) -> None:
        run_dir = self.run_dir
        if run_dir:
            try:
                self.form.set_values(self.manager.run_config(run_dir))
                self.form.message.value = fmt.note(f"Pre-filled from {fmt.esc(os.path.basename(run_dir))}.", "info")
            except (RunError, OSError) as e:
                self.note(f"could not read the run's config: {e}", "warn")
        self._navigate("form", "")

    def _back(self, _b=None) -> None:
        self.form.message.value = ""
        self._navigate("auto", "")

    def _selected(self, selected: tuple[str, ...]) -> None:
        if len(selected) == 1:
            self._navigate("run", selected[0])
        elif not selected and self._mode == "run":
            self._navigate("auto", "")
        else:
            self._request_refresh()  # two or more: the overlay

    def _delete(self, run_dir: str) -> None:
        """The run table's confirmed Delete: RunManager.delete (it refuses a live run)."""
        table = self.history

        def work():
            try:
                said = self.manager.delete(run_dir)
            except RunError as e:
                table.say(fmt.note(f"Not deleted: {fmt.esc(e)}", "error"))
                self.note(str(e), "error")
                return
            with self._lock:
                table.model.forget(run_dir)
            if self._pinned == run_dir:
                self._navigate("auto", "")
            table.say(fmt.note(fmt.esc(said), "ok"))
            self.note(said, "ok")

        self._spawn("delete", work)

    def _navigate(self, mode: str, pinned: str) -> None:
        """Switch what the panel shows. Runs on the kernel's main thread (a click), so it never
        waits for a poll in progress: the form is shown at once when the panel is free, and
        anything else on the poller's next (immediate) tick."""
        self._mode, self._pinned = mode, pinned
        if mode == "form" and self._lock.acquire(timeout=0.05):
            try:
                self._show_form()
            finally:
                self._lock.release()
        self._request_refresh()

    def _export(self, run_dir: str, format: str, folder: str) -> None:
        """The Export row's button: RunManager.export in a worker, its phases shown live."""
        row = self.outcome.export_row
        row.set_busy(True)
        phase = ["starting the exporter in a separate process"]
        row.progress.value = f'<i class="fa fa-spinner fa-spin"></i> {fmt.esc(phase[0])}…'

        def progress(p: str) -> None:
            phase[0] = p
            row.progress.value = f'<i class="fa fa-spinner fa-spin"></i> {fmt.esc(p)}…'

        def work():
            try:
                printed = self.manager.export(run_dir, folder, format=format, on_progress=progress)
            except RunError as e:
                row.progress.value = fmt.note(f"Export failed: {fmt.esc(e)}", "error")
                self.note(f"export failed: {e}", "error")
                return
            finally:
                row.set_busy(False)
            row.progress.value = ""
            row.show_result(printed)
            self.note(f"exported {os.path.basename(run_dir)} as {format} to {folder}", "ok")

        self._spawn("export", work)

    def _generate(self, run_dir: str, checkpoint: int | None, messages: list, base_messages: list | None,
                  settings: dict) -> None:
        """The playground's Generate: its warm sampler (started on first use) answers, then the
        base model too when comparing, in a worker thread; the phases are shown live."""
        pg = self.playground
        pg.busy = True
        pg.output.value = pg.base_output.value = ""

        def work():
            result: dict[str, Any] = {}
            phase = ["starting the sampler in a separate process"]

            def call():
                say = lambda p: phase.__setitem__(0, p)  # noqa: E731
                try:
                    result["out"] = self.samplers.generate(run_dir, messages, checkpoint=checkpoint,
                                                           on_progress=say, **settings)
                    if base_messages is not None:
                        phase[0] = "the base model"
                        result["base"] = self.samplers.generate(run_dir, base_messages, checkpoint=checkpoint,
                                                                model="base", on_progress=say, **settings)
                except Exception as e:  # noqa: BLE001
                    result["error"] = e

            sampler = threading.Thread(target=call, name="gft-sample-call", daemon=True)
            t0 = time.monotonic()
            sampler.start()
            try:
                while sampler.is_alive():
                    pg.progress.value = (f'<i class="fa fa-spinner fa-spin"></i> {fmt.esc(phase[0])}… '
                                         f"{time.monotonic() - t0:.0f} s")
                    sampler.join(0.5)
                if "error" in result:
                    pg.progress.value = fmt.note(f"Sampling failed: {fmt.esc(result['error'])}", "error")
                    return
                out, base = result["out"], result.get("base")
                pg.show_answers(messages[-1]["content"], str(out.get("text", "")),
                                None if base is None else str(base.get("text", "")))
                ckpt = str(out.get("checkpoint") or "base weights")
                if ckpt.startswith(run_dir.rstrip(os.sep) + os.sep):
                    ckpt = os.path.relpath(ckpt, run_dir)  # checkpoints/step_N
                seconds = out.get("seconds", 0) + (base.get("seconds", 0) if base else 0)
                pg.progress.value = (f'<span style="color:#555">{fmt.esc(ckpt)} · {fmt.number(seconds, 3)} s'
                                     f' · seed {out.get("seed")}</span>')
            finally:
                pg.busy = False

        self._spawn("sample", work)


class _Idle:
    """The status of a workspace folder that does not exist yet."""

    state = State.IDLE
    active = False
    run_dir = None
    reason = "no runs in this workspace"


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
