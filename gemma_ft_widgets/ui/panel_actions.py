"""The control panel's buttons: each runs its RunManager call in a worker thread (so the
kernel stays responsive) and words the outcome on the widget it came from, and in the panel's
message log. What to show next is the controller's (ui/controller.py); the next poll draws it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, TrainingConfig
from ..runs import RunError
from . import fmt


def _spinner(text: str) -> str:
    return f'<i class="fa fa-spinner fa-spin"></i> {fmt.esc(text)}'


class PanelActions:
    """The handlers the panel's views call (on_start=, on_stop=, …, and button clicks).
    `panel` is the ControlPanel (not imported here: it imports this module)."""

    def __init__(self, panel: Any):
        self.panel = panel
        self.ctl = panel.controller
        self.manager = panel.manager

    # -- the form ---------------------------------------------------------------------------
    def start(self, config: TrainingConfig, start_anyway: bool = False) -> None:
        """Start a run of `config` in a worker thread; config errors go to the form's fields, a
        refusal to its message."""
        form = self.panel.form
        form.busy = True
        form.message.value = fmt.note("Starting…", "info")

        def work():
            try:
                run = self.manager.start(config, start_anyway=start_anyway)
            except ConfigError as e:
                form.show_config_error(e)
                form.message.value = fmt.note("The config has errors; see the fields above.", "error")
                return
            except RunError as e:
                form.message.value = fmt.note(f"Not started: {fmt.esc(fmt.run_error(e))}", "error")
                return
            finally:
                form.busy = False
            with self.ctl.lock:
                self.ctl.navigate("auto")
                self.panel.history.clear_selection()
            form.message.value = fmt.note(f"Started {fmt.esc(run.name)}.", "ok")
            self.ctl.note(f"started {run.name}", "ok")

        self.ctl.spawn("start", work)

    def enqueue(self, config: TrainingConfig, grid: list[str] | None = None) -> None:
        """Queue the form's config, or with a sweep grid one run per point, as a group."""
        form = self.panel.form

        def work():
            try:
                if grid:
                    entries = self.ctl.enqueue_sweep(config, grid)
                    text = f"Queued a sweep of {len(entries)} runs as group {fmt.esc(entries[0].group)}."
                else:
                    entry = self.manager.queue.add(config)
                    text = f"Queued {fmt.esc(entry.id)} ({fmt.esc(entry.label())})."
            except ConfigError as e:
                form.show_config_error(e)
                form.message.value = fmt.note("Not queued: " + "; ".join(
                    fmt.esc(str(err)) for err in e.errors[:5]), "error")
                return
            except RunError as e:
                form.message.value = fmt.note(f"Not queued: {fmt.esc(fmt.run_error(e))}", "error")
                return
            form.message.value = fmt.note(text, "ok")
            self.ctl.note(text, "ok")

        self.ctl.spawn("enqueue", work)

    def back(self, _b=None) -> None:
        """Leave the form for whatever the panel shows by itself."""
        self.panel.form.message.value = ""
        self.panel.navigate("auto")

    # -- the queue --------------------------------------------------------------------------
    def _queue_action(self, name: str, fn: Callable[[], Any]) -> None:
        def work():
            try:
                fn()
            except RunError as e:
                self.ctl.note(fmt.run_error(e), "error")
            self.panel.request_refresh()

        self.ctl.spawn(f"queue-{name}", work)

    def queue_remove(self, entry_id: str) -> None:
        """Remove a queued entry (in a worker thread; an error goes to the message log)."""
        self._queue_action("remove", lambda: self.manager.queue.remove(entry_id))

    def queue_pause(self) -> None:
        """Pause the queue (in a worker thread)."""
        self._queue_action("pause", self.manager.queue.pause)

    def queue_resume(self) -> None:
        """Resume the queue, starting its head if the slot is free (in a worker thread)."""
        self._queue_action("resume", self.manager.queue.resume)

    # -- the dashboard ----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the active run gracefully (in a worker thread) and say how it went."""
        dashboard = self.panel.dashboard
        self.ctl.stop_in_flight = True
        dashboard.message.value = ""

        def work():
            try:
                report = self.manager.stop(force=False, timeout=self.panel.stop_timeout)
                dashboard.message.value = fmt.note(fmt.esc(fmt.stop_message(report)), "info")
                self.ctl.note(fmt.stop_message(report))
            finally:
                self.ctl.stop_in_flight = False

        self.ctl.spawn("stop", work)

    def force(self) -> None:
        """Kill the active run (in a worker thread), also while a graceful stop is still waiting."""
        dashboard = self.panel.dashboard
        self.ctl.stop_in_flight = True

        def work():
            # RunManager.stop(force=True) never waits behind the graceful stop still running.
            report = self.manager.stop(force=True, timeout=self.panel.stop_timeout)
            dashboard.message.value = fmt.note(fmt.esc(fmt.stop_message(report)), "warn")
            self.ctl.note(fmt.stop_message(report), "warn")

        self.ctl.spawn("force", work)

    def restore_lock(self) -> None:
        """Write the shown run's missing workspace lock again (in a worker thread)."""
        dashboard = self.panel.dashboard
        run_dir = self.panel.run_dir

        def work():
            try:
                text = self.manager.restore_lock(run_dir or None)
            except RunError as e:
                dashboard.message.value = fmt.note(f"Lock not restored: {fmt.esc(fmt.run_error(e))}", "error")
                return
            dashboard.message.value = fmt.note(fmt.esc(text), "ok")
            self.ctl.note(text, "ok")

        self.ctl.spawn("restore-lock", work)

    # -- the outcome view -------------------------------------------------------------------
    def resume(self, _b=None) -> None:
        """Resume the shown run from the checkpoint picked (newest by default), in a worker thread."""
        outcome = self.panel.outcome
        run_dir = self.panel.run_dir
        checkpoint = outcome.checkpoint_picker.value or None

        def work():
            try:
                run = self.manager.resume(run_dir or None, checkpoint=checkpoint)
            except RunError as e:
                self.ctl.note(fmt.run_error(e), "error")
                outcome.say(fmt.note(f"Not resumed: {fmt.esc(fmt.run_error(e))}", "error"))
                return
            self.ctl.follow()
            self.ctl.note(f"resumed {run.name}", "ok")

        outcome.resume_button.disabled = True
        self.ctl.spawn("resume", work)

    def clean(self, _b=None) -> None:
        """Clean up the orphaned run's lock, keeping its files (in a worker thread)."""
        outcome = self.panel.outcome

        def work():
            try:
                self.ctl.note(self.manager.clean(), "ok")
            except RunError as e:
                self.ctl.note(fmt.run_error(e), "error")
                outcome.say(fmt.note(f"Not cleaned up: {fmt.esc(fmt.run_error(e))}", "error"))

        outcome.clean_button.disabled = True
        self.ctl.spawn("clean", work)

    def new_run(self, _b=None) -> None:
        """Open the form, pre-filled from the shown run's config when it can be read."""
        form = self.panel.form
        run_dir = self.panel.run_dir
        if run_dir:
            try:
                form.set_values(self.manager.run_config(run_dir))
                form.message.value = fmt.note(f"Pre-filled from {fmt.esc(os.path.basename(run_dir))}.", "info")
            except (RunError, OSError) as e:
                self.ctl.note(f"could not read the run's config: {e}", "warn")
        self.panel.navigate("form")

    def export(self, run_dir: str, format: str, folder: str) -> None:
        """The Export row's button: RunManager.export in a worker, its phases shown live."""
        row = self.panel.outcome.export_row
        row.set_busy(True)
        row.progress.value = _spinner("starting the exporter in a separate process") + "…"

        def progress(phase: str) -> None:
            row.progress.value = _spinner(phase) + "…"

        def work():
            try:
                printed = self.manager.export(run_dir, folder, format=format, on_progress=progress)
            except RunError as e:
                row.progress.value = fmt.note(f"Export failed: {fmt.esc(fmt.run_error(e))}", "error")
                self.ctl.note(f"export failed: {e}", "error")
                return
            finally:
                row.set_busy(False)
            row.progress.value = ""
            row.show_result(printed)
            self.ctl.note(f"exported {os.path.basename(run_dir)} as {format} to {folder}", "ok")

        self.ctl.spawn("export", work)

    # -- the run table ----------------------------------------------------------------------
    def selected(self, selected: tuple[str, ...]) -> None:
        """The run table's selection changed: one run is shown, none goes back to auto, several are overlaid."""
        if len(selected) == 1:
            self.panel.navigate("run", selected[0])
        elif not selected and self.ctl.mode == "run":
            self.panel.navigate("auto")
        else:
            self.panel.request_refresh()  # two or more: the overlay

    def delete(self, run_dir: str) -> None:
        """The run table's confirmed Delete: RunManager.delete (it refuses a live run)."""
        table = self.panel.history

        def work():
            try:
                said = self.manager.delete(run_dir)
            except RunError as e:
                table.say(fmt.note(f"Not deleted: {fmt.esc(fmt.run_error(e))}", "error"))
                self.ctl.note(fmt.run_error(e), "error")
                return
            with self.ctl.lock:
                table.model.forget(run_dir)
            if self.ctl.pinned == run_dir:
                self.panel.navigate("auto")
            table.say(fmt.note(fmt.esc(said), "ok"))
            self.ctl.note(said, "ok")

        self.ctl.spawn("delete", work)

    # -- the playground ---------------------------------------------------------------------
    def generate(self, run_dir: str, checkpoint: int | None, messages: list, base_messages: list | None,
                 settings: dict) -> None:
        """The playground's Generate: its warm sampler (started on first use) answers, then the
        base model too when comparing, in one worker thread. The phase is shown as the sampler
        reports it, and the seconds taken on each poll meanwhile."""
        pg = self.panel.playground
        pg.busy = True
        pg.output.value = pg.base_output.value = ""

        def show_phase(_phase: str) -> None:
            text = self.ctl.sampling_phase()
            if text is not None:
                pg.progress.value = _spinner(text)

        def work():
            try:
                try:
                    out, base = self.ctl.sample(self.panel.samplers, run_dir, messages, base_messages, checkpoint,
                                                settings, show_phase)
                except Exception as e:  # noqa: BLE001 - any sampler error is shown in the playground
                    with self.ctl.lock:
                        self.ctl.sampling = None
                        pg.progress.value = fmt.note(f"Sampling failed: {fmt.esc(e)}", "error")
                    return
                with self.ctl.lock:
                    self.ctl.sampling = None
                    pg.show_answers(messages[-1]["content"], str(out.get("text", "")),
                                    None if base is None else str(base.get("text", "")))
                    pg.progress.value = _sample_summary(run_dir, out, base)
            finally:
                self.ctl.sampling = None
                pg.busy = False

        self.ctl.spawn("sample", work)


def _sample_summary(run_dir: str, out: dict, base: dict | None) -> str:
    """'checkpoints/step_N · 0.5 s · seed 0' under the answers."""
    ckpt = str(out.get("checkpoint") or "base weights")
    if ckpt.startswith(run_dir.rstrip(os.sep) + os.sep):
        ckpt = os.path.relpath(ckpt, run_dir)  # checkpoints/step_N
    seconds = out.get("seconds", 0) + (base.get("seconds", 0) if base else 0)
    return (f'<span style="color:#555">{fmt.esc(ckpt)} · {fmt.number(seconds, 3)} s'
            f' · seed {out.get("seed")}</span>')
