"""Playground: a prompt, Generate, and the output, from a checkpoint of the selected run (the
newest unless the user picks another).

Sampling runs in a subprocess (`RunManager.sample`), started from a worker thread, so the
kernel never holds accelerator memory that training needs and stays responsive meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as w
import traitlets as t

from . import fmt


class Playground(w.VBox):
    """Public names: `run_label`, `checkpoint` (a Dropdown of the run's checkpoint steps, newest
    first), `prompt`, `max_new_tokens`, `generate_button`, `progress`, `output`; traits
    `run_dir`, `busy`. `on_generate(run_dir, prompt, max_new_tokens, checkpoint_step)`."""

    run_dir = t.Unicode("")
    busy = t.Bool(False)

    def __init__(self, on_generate: Callable[[str, str, int, int | None], None] | None = None, **kwargs):
        self.on_generate = on_generate
        self.run_label = w.HTML('<span style="color:#666">No run with a checkpoint selected.</span>')
        self.run_label.add_class("gft-playground-run")
        self.checkpoint = w.Dropdown(options=[], description="checkpoint", disabled=True,
                                     style={"description_width": "80px"}, layout=w.Layout(width="260px"))
        self.checkpoint.add_class("gft-checkpoint")
        self.prompt = w.Textarea(placeholder="Ask the fine-tuned model something…", rows=3,
                                 layout=w.Layout(width="100%"))
        self.prompt.add_class("gft-prompt")
        self.max_new_tokens = w.IntText(value=64, description="max new tokens",
                                        style={"description_width": "110px"}, layout=w.Layout(width="200px"))
        self.max_new_tokens.add_class("gft-max-new-tokens")
        self.generate_button = w.Button(description="Generate", icon="play", button_style="primary",
                                        disabled=True, layout=w.Layout(width="150px"))
        self.generate_button.add_class("gft-generate")
        self.generate_button.on_click(self._clicked)
        self.progress = w.HTML()
        self.progress.add_class("gft-sample-progress")
        self.output = w.Textarea(value="", rows=6, placeholder="(output)", layout=w.Layout(width="100%"))
        self.output.add_class("gft-output")
        self._can = False
        super().__init__([self.run_label, self.checkpoint, self.prompt,
                          w.HBox([self.max_new_tokens, self.generate_button, self.progress],
                                 layout=w.Layout(align_items="center", grid_gap="8px")),
                          self.output], **kwargs)
        self.add_class("gft-playground")
        self.observe(self._update, ["busy"])
        self.prompt.observe(self._update, "value")

    def set_run(self, status: Any | None) -> None:
        """Point the playground at a run (its last checkpoint), or at nothing."""
        if status is None or not status.last_checkpoint:
            run_dir, self._can = (status.run_dir if status else "") or "", False
            text = ('<span style="color:#666">No checkpoint yet'
                    + (f" in <b>{fmt.esc(status.run_name)}</b>" if status else "") + ".</span>")
        else:
            run_dir, self._can = status.run_dir, True
            live = " · training is still running; sampling happens in a separate process" if status.active else ""
            text = f"Run <b>{fmt.esc(status.run_name)}</b>{fmt.esc(live)}"
        if self.run_label.value != text:
            self.run_label.value = text
        self._set_checkpoints(run_dir, list(getattr(status, "checkpoints", None) or []) if self._can else [])
        if self.run_dir != run_dir:
            self.run_dir = run_dir
        self._update()

    def _set_checkpoints(self, run_dir: str, steps: list[int]) -> None:
        """Newest first. The pick survives a refresh; a pick of the newest follows new ones."""
        steps = sorted(steps, reverse=True)
        options = [(f"step {n}" + (" (newest)" if i == 0 else ""), n) for i, n in enumerate(steps)]
        if options == list(self.checkpoint.options):
            return
        old_newest = self.checkpoint.options[0][1] if self.checkpoint.options else None
        keep = (run_dir == self.run_dir and self.checkpoint.value in steps
                and self.checkpoint.value != old_newest)
        value = self.checkpoint.value if keep else (steps[0] if steps else None)
        self.checkpoint.options = options  # selects the first (the newest), or None
        if self.checkpoint.value != value:
            self.checkpoint.value = value
        self.checkpoint.disabled = not steps

    def _update(self, change=None) -> None:
        disabled = self.busy or not self._can or not self.prompt.value.strip()
        if self.generate_button.disabled != disabled:
            self.generate_button.disabled = disabled

    def _clicked(self, _b=None) -> None:
        if self.busy or not self._can or not self.prompt.value.strip():
            return
        if self.on_generate is not None:
            self.on_generate(self.run_dir, self.prompt.value, int(self.max_new_tokens.value), self.checkpoint.value)
