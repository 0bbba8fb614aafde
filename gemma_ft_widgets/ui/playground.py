"""Playground: a prompt, Generate, and the output, from the selected run's last checkpoint.

Sampling runs in a subprocess (`RunManager.sample`), started from a worker thread, so the
kernel never holds accelerator memory that training needs and stays responsive meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as w
import traitlets as t

from . import fmt


class Playground(w.VBox):
    """Public names: `run_label`, `prompt`, `max_new_tokens`, `generate_button`, `progress`,
    `output`; traits `run_dir`, `busy`."""

    run_dir = t.Unicode("")
    busy = t.Bool(False)

    def __init__(self, on_generate: Callable[[str, str, int], None] | None = None, **kwargs):
        self.on_generate = on_generate
        self.run_label = w.HTML('<span style="color:#666">No run with a checkpoint selected.</span>')
        self.run_label.add_class("gft-playground-run")
        self.prompt = w.Textarea(placeholder="Ask the fine-tuned model something…", rows=3,
                                 layout=w.Layout(width="100%"))
        self.prompt.add_class("gft-prompt")
        self.max_new_tokens = w.IntText(value=64, description="max new tokens",
                                        style={"description_width": "110px"}, layout=w.Layout(width="200px"))
        self.max_new_tokens.add_class("gft-max-new-tokens")
        self.generate_button = w.Button(description="Generate", icon="play", button_style="primary",
                                        disabled=True, layout=w.Layout(width="130px"))
        self.generate_button.add_class("gft-generate")
        self.generate_button.on_click(self._clicked)
        self.progress = w.HTML()
        self.progress.add_class("gft-sample-progress")
        self.output = w.Textarea(value="", rows=6, placeholder="(output)", layout=w.Layout(width="100%"))
        self.output.add_class("gft-output")
        self._can = False
        super().__init__([self.run_label, self.prompt,
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
            live = " (training is still running; sampling happens in a separate process)" if status.active else ""
            text = (f"Run <b>{fmt.esc(status.run_name)}</b>, checkpoint "
                    f"<code>{fmt.esc(status.last_checkpoint)}</code>{fmt.esc(live)}")
        if self.run_label.value != text:
            self.run_label.value = text
        if self.run_dir != run_dir:
            self.run_dir = run_dir
        self._update()

    def _update(self, change=None) -> None:
        disabled = self.busy or not self._can or not self.prompt.value.strip()
        if self.generate_button.disabled != disabled:
            self.generate_button.disabled = disabled

    def _clicked(self, _b=None) -> None:
        if self.busy or not self._can or not self.prompt.value.strip():
            return
        if self.on_generate is not None:
            self.on_generate(self.run_dir, self.prompt.value, int(self.max_new_tokens.value))
