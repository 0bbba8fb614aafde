"""What a run that is no longer active shows above its dashboard: how it ended, and what the
user can do next (Resume, New run, Playground, Clean up).

FINISHED / ABORTED: a summary and New run (pre-filled), Playground, and Resume for ABORTED.
FAILED: the reason, exit code or signal, stderr's tail, and New run. FINISHED, ABORTED and
FAILED runs with a checkpoint get an Export row (ui/export_row.py). ORPHANED: a warning
saying why, then Resume from the last checkpoint or Clean up (clears the lock, keeps the
files); New run too, since a start clears a provably dead lock by itself.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from . import fmt, layout
from .export_row import ExportRow
from .state_table import look


def _show(widget: w.Widget, visible: bool) -> None:
    display = None if visible else "none"
    if widget.layout.display != display:
        widget.layout.display = display


def banner_html(status: Any) -> str:
    """The banner of a run that ended: how it ended, at which step, its losses or reason, and its
    last checkpoint (see the module docstring)."""
    state = fmt.state_value(status.state)
    step = fmt.count(status.step)
    total = fmt.count(status.max_steps or None)
    ckpt = fmt.esc(status.last_checkpoint) if status.last_checkpoint else "none"
    took = fmt.duration(getattr(status, "wall_s", None) or status.elapsed_s)  # all attempts
    if state == "FINISHED":
        return fmt.note(f"<b>Finished</b> at step {step} / {total} in {took}. Final loss "
                        f"{fmt.number(status.loss)}, eval loss {fmt.number(status.eval_loss)}. "
                        f"Last checkpoint: {ckpt}.", "ok")
    if state == "ABORTED":
        why = f" ({fmt.esc(status.reason)})" if status.reason else ""
        return fmt.note(f"<b>Stopped</b> at step {step} / {total}{why}. Last checkpoint: {ckpt}."
                        + (" Resume continues from it." if status.can_resume else ""), "warn")
    if state == "FAILED":
        how = []
        if status.exit_code is not None:
            how.append(f"exit code {status.exit_code}")
        if status.signal_name:
            how.append(f"signal {fmt.esc(status.signal_name)}")
        return fmt.note(f"<b>Failed</b> at step {step} / {total}: {fmt.esc(status.reason or 'unknown reason')}"
                        + (f" ({', '.join(how)})" if how else "") + f". Last checkpoint: {ckpt}.", "error")
    if state == "ORPHANED":
        return fmt.note(f"<b>Orphaned:</b> {fmt.esc(status.reason or 'the run is not running any more')}. "
                        f"It stopped at step {step} / {total} without recording a result. Last checkpoint: "
                        f"{ckpt}. Resume continues from the last checkpoint; Clean up clears the lock "
                        "and keeps every file.", "warn")
    return ""


class OutcomeView(w.VBox):
    """Public names: `banner`, `stderr_tail`, `resume_button`, `checkpoint_picker` (which
    checkpoint Resume starts from: "" for the newest that restores), `new_run_button`,
    `playground_button`, `clean_button`, `export_row`, and `message`: what the last action on
    this run said (e.g. why Resume was refused), kept under the buttons until the run or its
    state changes."""

    def __init__(self, on_export=None, **kwargs):
        self.banner = w.HTML()
        self.banner.add_class("gft-outcome")
        self.stderr_tail = w.HTML()
        self.stderr_tail.add_class("gft-stderr-tail")
        self.resume_button = w.Button(description="Resume", icon="play", button_style="primary",
                                      layout=w.Layout(width="120px"))
        self.resume_button.add_class("gft-resume")
        self.checkpoint_picker = w.Dropdown(options=[("newest that restores", "")], value="",
                                            layout=w.Layout(width="190px"), tooltip="resume from")
        self.checkpoint_picker.add_class("gft-resume-checkpoint")
        self.new_run_button = w.Button(description="New run", icon="plus", layout=w.Layout(width="120px"),
                                       tooltip="the form, pre-filled with this run's config")
        self.new_run_button.add_class("gft-new-run")
        self.playground_button = w.Button(description="Playground", icon="comment",
                                          layout=w.Layout(width="130px"))
        self.playground_button.add_class("gft-open-playground")
        self.clean_button = w.Button(description="Clean up", icon="broom", button_style="warning",
                                     tooltip="clear the lock; keeps the run's files and checkpoints",
                                     layout=w.Layout(width="120px"))
        self.clean_button.add_class("gft-clean")
        self.buttons = layout.row([self.resume_button, self.checkpoint_picker, self.new_run_button,
                                   self.playground_button, self.clean_button])
        self.message = w.HTML()
        self.message.add_class("gft-outcome-message")
        self.export_row = ExportRow(on_export=on_export)
        super().__init__([self.banner, self.stderr_tail, self.buttons, self.message, self.export_row], **kwargs)
        self.add_class("gft-outcome-view")
        self.state = ""
        self._shown: tuple = ()

    def say(self, html: str) -> None:
        """Show an action's answer under the buttons (it outlives the redraws of the banner)."""
        self.message.value = html

    def show(self, status: Any, stderr_tail: str = "", busy: bool = False) -> None:
        """Draw an ended run's outcome: banner, stderr tail, the buttons its state offers and the
        Export row; hidden for an active run. `busy` disables Resume and Clean up."""
        state = fmt.state_value(status.state)
        self.state = state
        shown = (status.run_dir, state, status.attempt)
        if shown != self._shown:  # another run, or this one moved on: the old answer is stale
            self._shown = shown
            if self.message.value:
                self.message.value = ""
        lk = look(state)
        html = banner_html(status) if lk.ended else ""
        if self.banner.value != html:
            self.banner.value = html
        tail = ""
        if lk.stderr:
            tail = "<b>stderr (last lines)</b>" + fmt.pre(stderr_tail, "240px", "gft-pre gft-stderr-text")
        if self.stderr_tail.value != tail:
            self.stderr_tail.value = tail
        _show(self.stderr_tail, lk.stderr)
        has_ckpt = bool(status.last_checkpoint)
        resumable = bool(status.can_resume) and lk.resume
        _show(self.resume_button, resumable)
        steps = list(getattr(status, "checkpoints", None) or [])
        options = [("newest that restores", "")] + [(f"from step_{s}", str(s)) for s in reversed(steps)]
        if list(self.checkpoint_picker.options) != options:
            keep = self.checkpoint_picker.value if self.checkpoint_picker.value in {v for _, v in options} else ""
            self.checkpoint_picker.options = options
            self.checkpoint_picker.value = keep
        _show(self.checkpoint_picker, resumable and len(steps) > 1)
        _show(self.new_run_button, lk.ended)  # a stale lock never blocks a new start
        _show(self.playground_button, lk.playground and has_ckpt)
        _show(self.clean_button, lk.clean)
        exportable = lk.export and has_ckpt
        if exportable:
            self.export_row.set_run(status.run_dir)
        _show(self.export_row, exportable)
        for b in (self.resume_button, self.clean_button):
            if b.disabled != busy:
                b.disabled = busy
        _show(self, lk.ended)
