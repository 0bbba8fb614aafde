"""The run dashboard: state badge, KPIs, loss and throughput plots, logs, and Abort.

Shown live for STARTING / RUNNING / STOPPING, and (without the abort controls) for a run
that has ended. Everything on it is set from what the poller read through `runs/`; the only
local state is whether the abort confirmation is open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from ..runs.phases import describe
from ..runs.phases import fraction as phase_fraction
from ..runs.status import fmt_devices
from . import fmt, layout, plots
from .curve_view import CurveView
from .processes_view import ProcessesView
from .samples_view import SamplesView
from .series import RunSeries
from .state_table import look

KPI_LABELS = {
    "loss": "loss",
    "eval_loss": "eval loss",
    "lr": "learning rate",
    "tokens_per_s": "tokens / s",
    "eta": "ETA",
    "elapsed": "elapsed",
    "device_mem": "device memory",
    "host_mem": "host memory",
}
LOG_STREAMS = ("stdout", "stderr", "supervisor")  # stdout first: the trainer logs there


def _show(widget: w.Widget, visible: bool) -> None:
    display = None if visible else "none"
    if widget.layout.display != display:
        widget.layout.display = display


def _set(widget: w.Widget, name: str, value: Any) -> None:
    """Set a trait only when it changes (no message otherwise)."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)


def _kpi_html(label: str, value: str) -> str:
    return (f'<div style="line-height:1.2;padding:2px 8px"><div style="color:#666;font-size:0.8em">'
            f'{fmt.esc(label)}</div><div style="font-size:1.15em;font-weight:600">{value}</div></div>')


class Dashboard(w.VBox):
    """Public names: `badge`, `run_label`, `phase`, `progress`, `progress_label`, `kpis[name]`
    (loss, eval_loss, lr, tokens_per_s, eta, elapsed, device_mem, host_mem), `processes`, `loss_figure`,
    `loss_line`, `eval_line`, `throughput_figure`, `throughput_line`, `transitions`,
    `samples` (SamplesView), `log_stream`, `logs`, `abort_button`, `confirm_button`, `cancel_button`, `stopping_label`,
    `force_button`, `restore_lock_button`, `message`; trait `confirming`."""

    confirming = t.Bool(False)

    def __init__(self, on_stop: Callable[[], None] | None = None,
                 on_force: Callable[[], None] | None = None,
                 on_restore_lock: Callable[[], None] | None = None, **kwargs):
        self.on_stop, self.on_force, self.on_restore_lock = on_stop, on_force, on_restore_lock
        self.state = ""
        self._build_views()
        self._build_controls()
        self.abort_button.on_click(lambda _b: setattr(self, "confirming", True))
        self.cancel_button.on_click(lambda _b: setattr(self, "confirming", False))
        self.confirm_button.on_click(self._confirmed)
        self.force_button.on_click(self._forced)
        self.observe(lambda _c: self.set_controls(self.state, self._stopping), "confirming")
        self._stopping = False

        header = layout.row([self.badge, self.run_label, self.phase], align="center", gap="0 12px")
        progress = layout.row([self.progress, self.progress_label], align="center", gap="0 8px")
        kpis = w.HBox(list(self.kpis.values()), layout=w.Layout(flex_flow="row wrap"))
        plots_box = self.curves
        logs = w.VBox([w.HTML("<b>State transitions</b>"), self.transitions, w.HTML("<b>Logs</b>"),
                       self.log_stream, self.logs])
        super().__init__([header, progress, kpis, self.processes, self.controls, self.message, plots_box, self.samples,
                          logs], **kwargs)
        self.add_class("gft-dashboard")
        self.set_controls("IDLE", False)

    # -- building ---------------------------------------------------------------------------
    def _build_views(self) -> None:
        """The header, progress, KPIs, processes, curves, samples, transitions and logs."""
        self.badge = w.HTML(fmt.badge("IDLE"))
        self.badge.add_class("gft-state-badge")
        self.run_label = w.HTML()
        self.run_label.add_class("gft-run-name")
        self.phase = w.HTML()
        self.phase.add_class("gft-phase")
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="320px", max_width="100%"))
        self.progress.add_class("gft-progress")
        self.progress_label = w.HTML("step —")
        self.progress_label.add_class("gft-progress-label")
        self.kpis: dict[str, w.HTML] = {}
        for name, label in KPI_LABELS.items():
            self.kpis[name] = w.HTML(_kpi_html(label, fmt.DASH))
            self.kpis[name].add_class(f"gft-kpi-{name.replace('_', '-')}")
        self._kpi_text = {name: fmt.DASH for name in KPI_LABELS}
        self.processes = ProcessesView()  # a multi-process run's trainers (hidden for one)

        self.curves = CurveView()  # loss, throughput, lr and gradient norm, with their view controls
        c = self.curves
        self.loss_figure, self.loss_line, self.eval_line = c.loss_figure, c.loss_line, c.eval_line
        self.throughput_figure, self.throughput_line = c.throughput_figure, c.throughput_line
        self.samples = SamplesView()

        self.transitions = w.HTML()
        self.transitions.add_class("gft-transitions")
        self.log_stream = w.ToggleButtons(options=list(LOG_STREAMS), value="stdout",
                                          style={"button_width": "90px"})
        self.log_stream.add_class("gft-log-stream")
        self.logs = w.HTML()
        self.logs.add_class("gft-logs")

    def _build_controls(self) -> None:
        """Abort with its confirmation, the stopping note, Force kill, Restore lock."""
        self.abort_button = w.Button(description="Abort", icon="stop", button_style="danger",
                                     layout=w.Layout(width="110px"))
        self.abort_button.add_class("gft-abort")
        self.confirm_text = w.HTML("Stop this run? It finishes the current step and saves a checkpoint.")
        self.confirm_button = w.Button(description="Yes, stop it", button_style="danger",
                                       layout=w.Layout(width="130px"))
        self.confirm_button.add_class("gft-confirm")
        self.cancel_button = w.Button(description="Cancel", layout=w.Layout(width="100px"))
        self.cancel_button.add_class("gft-cancel")
        self.confirm_box = layout.row([layout.message(self.confirm_text), layout.keep_size(self.confirm_button),
                                       layout.keep_size(self.cancel_button)], align="center")
        self.stopping_label = w.HTML("<b>stopping…</b> waiting for the trainer to save a checkpoint")
        self.stopping_label.add_class("gft-stopping")
        self.force_button = w.Button(description="Force kill", icon="bolt", button_style="danger",
                                     tooltip="SIGTERM, then SIGKILL to the run's process group",
                                     layout=w.Layout(width="120px"))
        self.force_button.add_class("gft-force")
        # Shown while status says the run lives but its workspace lock was deleted: the same
        # RunManager.restore_lock as `gemma-ft restore-lock`.
        self.restore_lock_button = w.Button(description="Restore lock", icon="lock",
                                            tooltip="write the workspace lock again from the run's live processes",
                                            layout=w.Layout(width="140px", display="none"))
        self.restore_lock_button.add_class("gft-restore-lock")
        self.restore_lock_button.on_click(self._restore_lock_clicked)
        self.message = w.HTML()
        self.message.add_class("gft-dashboard-message")
        self.controls = layout.row([self.abort_button, self.confirm_box, self.stopping_label, self.force_button,
                                    self.restore_lock_button], align="center")
        self.controls.add_class("gft-controls")

    # -- controls ---------------------------------------------------------------------------
    def _confirmed(self, _b=None) -> None:
        self.confirming = False
        self._stopping = True
        self.set_controls(self.state, True)
        if self.on_stop is not None:
            self.on_stop()

    def _forced(self, _b=None) -> None:
        self.force_button.disabled = True
        if self.on_force is not None:
            self.on_force()

    def _restore_lock_clicked(self, _b=None) -> None:
        self.restore_lock_button.disabled = True  # until the next status says whether it is still missing
        if self.on_restore_lock is not None:
            self.on_restore_lock()

    def set_controls(self, state: str, stopping: bool, can_stop: bool = True) -> None:
        """Abort for an active run; 'stopping…' and Force kill while it stops."""
        self.state, self._stopping = state, stopping
        active = look(state).active and can_stop
        stopping = active and (stopping or state == "STOPPING")
        confirming = active and not stopping and self.confirming
        _show(self.abort_button, active and not stopping and not confirming)
        _show(self.confirm_box, confirming)
        _show(self.stopping_label, stopping)
        _show(self.force_button, stopping)
        if not stopping:
            _set(self.force_button, "disabled", False)
        _show(self.controls, active)
        if not active and self.confirming:
            self.confirming = False

    # -- data -------------------------------------------------------------------------------
    def show_status(self, status: Any, series: RunSeries | None) -> None:
        """Draw a run's status: badge, run line, phase, the lock warning, processes, samples, the
        progress bar and the KPIs (the series fills in what the status lacks)."""
        state = fmt.state_value(status.state)
        _set(self.badge, "value", fmt.badge(state))
        name = fmt.esc(status.run_name or "")
        model = f' · <span style="color:#666">{fmt.esc(status.model)}</span>' if status.model else ""
        attempt = f' · attempt {status.attempt}' if status.attempt and status.attempt > 1 else ""
        devices = getattr(status, "devices", None)
        on = f' · <span class="gft-devices" style="color:#666">{fmt.esc(fmt_devices(devices))}</span>' \
            if devices else ""
        _set(self.run_label, "value", f"<b>{name}</b>{model}{attempt}{on}")
        _set(self.phase, "value", self._phase(state, status, series))
        lock_missing = bool(getattr(status, "lock_missing", False)) and not status.foreign_host
        _show(self.restore_lock_button, lock_missing)
        if not lock_missing:
            _set(self.restore_lock_button, "disabled", False)
        self.processes.show(status)
        self.samples.show(series)

        step = status.step if status.step is not None else (series.latest("step") if series else None)
        total = status.max_steps
        phase = getattr(status, "phase", None) or (series.last_phase if series is not None else None)
        counted = phase_fraction(phase) if state == "STARTING" and not step else None
        if counted is not None:  # before step 1 the bar shows the download or the tokenizing
            what, done = counted
            _set(self.progress, "max", 1000)
            _set(self.progress, "value", int(done * 1000))
            _set(self.progress, "bar_style", "info")
            _set(self.progress_label, "value", f"{what} <b>{100 * done:.0f}%</b>")
        else:
            _set(self.progress, "max", max(1, int(total or 1)))
            _set(self.progress, "value", min(int(step or 0), self.progress.max))
            _set(self.progress, "bar_style", look(state).bar)
            pct = f" ({100 * (step or 0) / total:.0f}%)" if total else ""
            _set(self.progress_label, "value", f"step <b>{fmt.count(step)}</b> / {fmt.count(total or None)}{pct}")

        def pick(key):
            value = getattr(status, key, None)
            return value if value is not None or series is None else series.latest(key)

        eta = series.eta_s(total) if series is not None and look(state).active else None
        values = {
            "loss": fmt.number(pick("loss")),
            "eval_loss": fmt.number(status.eval_loss),
            "lr": fmt.number(pick("lr"), 3),
            # What the throughput line ends at (outliers clipped, smoothed), not the last raw value.
            "tokens_per_s": fmt.rate(self.curves.throughput_now() if series is not None else pick("tokens_per_s")),
            "eta": ("stalled" if getattr(status, "stalled_s", None) else fmt.duration(eta)) if look(state).active
                   else fmt.DASH,
            "elapsed": fmt.duration(getattr(status, "wall_s", None) or status.elapsed_s),  # all attempts
            "device_mem": fmt.nbytes(series.latest("device_mem_bytes")) if series else fmt.DASH,
            "host_mem": fmt.nbytes(series.latest("host_rss_bytes")) if series else fmt.DASH,
        }
        if values["device_mem"] == fmt.DASH and series is not None and series.last_step is not None:
            # The trainer's device does not report it; on a CPU there is no device memory apart
            # from the host's (shown next to it).
            values["device_mem"] = "CPU" if (devices or {}).get("platform") == "cpu" else "n/a"
        for name, text in values.items():
            if self._kpi_text[name] != text:
                self._kpi_text[name] = text
                self.kpis[name].value = _kpi_html(KPI_LABELS[name], text)

    def kpi(self, name: str) -> str:
        """The text a KPI shows (for tests and notebooks)."""
        return self._kpi_text[name]

    @staticmethod
    def _truncation(series: RunSeries | None) -> str:
        """A lasting warning when examples were cut to max_seq_len (their ends are not trained)."""
        from ..datasets import cut_note

        note = cut_note((series.last_data if series is not None else None) or {})
        return f'<span style="color:#a15c00">{fmt.esc(note)}</span>' if note else ""

    @staticmethod
    def _phase(state: str, status: Any, series: RunSeries | None) -> str:
        if status.foreign_host:
            return fmt.esc(status.reason or f"active on host {status.foreign_host}")
        if getattr(status, "stalled_s", None) or getattr(status, "lock_missing", False):
            return f'<span style="color:#b00020">{fmt.esc(status.reason)}</span>'
        if state != "STARTING":
            return Dashboard._truncation(series)
        bits = ["starting: loading the model and data"]
        if series is not None and series.last_data:
            d = series.last_data
            bits = [f"data: {d.get('train_examples', '?')} train / {d.get('eval_examples', '?')} eval examples"]
            bits.append("compiling…")
        # What the trainer says it is doing (runs/phases.py), until the step is compiled.
        phase = getattr(status, "phase", None) or (series.last_phase if series is not None else None)
        if phase:
            bits[-1] = f"starting: {describe(phase)}"
        if series is not None and series.last_compile:
            bits[-1] = f"compiled in {fmt.number(series.last_compile.get('seconds'), 3)} s; first step…"
        return f'<span style="color:#555">{fmt.esc(" · ".join(bits))}</span>'

    def show_curves(self, series: RunSeries | None, max_points: int = plots.MAX_POINTS) -> None:
        """Draw the series' curves (ui/curve_view.py), decimated incrementally: a refresh that
        appended points to the series drawn last costs what was appended, not the history."""
        self.curves.show(series, max_points)

    def show_logs(self, transitions: str, text: str) -> None:
        """Show the status transitions (newest first, local time) and the chosen log stream."""
        # Newest first, in local time: the latest transition is the one in view.
        _set(self.transitions, "value", fmt.pre(fmt.transitions(transitions), "140px",
                                                "gft-pre gft-transitions-text", tail=False))
        _set(self.logs, "value", fmt.pre(text, "260px", "gft-pre gft-logs-text"))
