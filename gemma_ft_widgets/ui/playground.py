"""Playground: a prompt, Generate, and the output, from a checkpoint of the selected run (the
newest unless the user picks another).

Sampling runs in a warm subprocess (runs/warm_sampler.py, one per run and checkpoint, loaded on
the first Generate and reused), driven from a worker thread, so the kernel never holds
accelerator memory that training needs and stays responsive meanwhile. Settings: temperature
(0 = greedy), top-p or top-k, and the seed. "Chat" keeps the conversation (each turn is sent
again in Gemma's turn format); "compare with the base model" answers with the base weights too,
side by side, each side continuing its own conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from . import fmt


class Playground(w.VBox):
    """Public names: `run_label`, `checkpoint` (a Dropdown of the run's checkpoint steps, newest
    first), `prompt`, `max_new_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `chat`,
    `compare`, `clear_button`, `generate_button`, `progress`, `output` (the fine-tuned answer),
    `base_output`, `history`; traits `run_dir`, `busy`; `turns` (the conversation so far).
    `on_generate(run_dir, checkpoint_step, messages, base_messages or None, settings)`; the
    caller shows the answers with `show_answers(prompt, text, base_text)`."""

    run_dir = t.Unicode("")
    busy = t.Bool(False)

    def __init__(self, on_generate: Callable[..., None] | None = None, **kwargs):
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
        self._build_options()
        self.history = w.HTML()
        self.history.add_class("gft-chat-history")
        self.output = w.Textarea(value="", rows=6, placeholder="(output)", layout=w.Layout(width="100%"))
        self.output.add_class("gft-output")
        self.base_output = w.Textarea(value="", rows=6, placeholder="(base model)", layout=w.Layout(width="100%"))
        self.base_output.add_class("gft-base-output")
        self.output_label = w.HTML("<b>fine-tuned</b>")
        self.base_box = w.VBox([w.HTML("<b>base model</b>"), self.base_output],
                               layout=w.Layout(width="50%", display="none"))
        self.outputs = w.HBox([w.VBox([self.output_label, self.output], layout=w.Layout(flex="1 1 50%")),
                               self.base_box], layout=w.Layout(width="100%", grid_gap="8px"))
        self.turns: list[dict] = []  # {"user", "tuned", "base"}
        self._can = False
        super().__init__([self.run_label, self.checkpoint, self.history, self.prompt,
                          w.HBox([self.temperature, self.top_p, self.top_k, self.seed],
                                 layout=w.Layout(flex_flow="row wrap", grid_gap="8px")),
                          w.HBox([self.chat, self.compare, self.clear_button],
                                 layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="12px")),
                          w.HBox([self.max_new_tokens, self.generate_button, self.progress],
                                 layout=w.Layout(align_items="center", grid_gap="8px")),
                          self.outputs], **kwargs)
        self.add_class("gft-playground")
        self.observe(self._update, ["busy"])
        self.prompt.observe(self._update, "value")
        self.compare.observe(self._show_compare, "value")
        self.chat.observe(lambda _c: self.clear(), "value")

    def _build_options(self) -> None:
        """Temperature, top-p, top-k and seed; chat, compare with the base, clear."""
        small = {"style": {"description_width": "initial"}, "layout": w.Layout(width="150px")}
        self.temperature = w.BoundedFloatText(value=0.0, min=0.0, max=2.0, step=0.1, description="temperature",
                                              tooltip="0 = greedy: always the most likely token", **small)
        self.top_p = w.BoundedFloatText(value=1.0, min=0.01, max=1.0, step=0.05, description="top-p",
                                        tooltip="sample from the smallest set of tokens holding this much "
                                                "probability (1 = all); with temperature > 0", **small)
        self.top_k = w.BoundedIntText(value=0, min=0, max=1000, description="top-k",
                                      tooltip="sample from the k most likely tokens (0 = off); not with top-p < 1",
                                      **small)
        self.seed = w.IntText(value=0, description="seed", tooltip="the same seed gives the same answer", **small)
        for name in ("temperature", "top_p", "top_k", "seed"):
            getattr(self, name).add_class(f"gft-{name.replace('_', '-')}")
        self.chat = w.Checkbox(value=False, description="chat (keep the conversation)", indent=False,
                               layout=w.Layout(width="auto"))
        self.chat.add_class("gft-chat")
        self.compare = w.Checkbox(value=False, description="compare with the base model", indent=False,
                                  layout=w.Layout(width="auto"))
        self.compare.add_class("gft-compare")
        self.clear_button = w.Button(description="Clear chat", icon="eraser", layout=w.Layout(width="auto"))
        self.clear_button.add_class("gft-clear-chat")
        self.clear_button.on_click(lambda _b: self.clear())

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
            self.clear()  # another run's model did not say those things
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

    def settings(self) -> dict:
        """The sampling options as entered: max_new_tokens, temperature, top_p, top_k, seed."""
        return {"max_new_tokens": int(self.max_new_tokens.value), "temperature": float(self.temperature.value),
                "top_p": float(self.top_p.value), "top_k": int(self.top_k.value), "seed": int(self.seed.value)}

    def messages(self, prompt: str, model: str = "tuned") -> list[dict]:
        """The conversation as `model` saw it (its own earlier answers), then `prompt`."""
        out = []
        for turn in self.turns if self.chat.value else []:
            out += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn[model] or ""}]
        return out + [{"role": "user", "content": prompt}]

    def show_answers(self, prompt: str, text: str, base_text: str | None = None) -> None:
        """Show the answer(s); in chat, add the turn to the conversation and clear the prompt."""
        self.output.value = text
        self.base_output.value = base_text or ""
        if self.chat.value:
            self.turns.append({"user": prompt, "tuned": text, "base": base_text})
            self.prompt.value = ""
            self._draw_history()

    def clear(self) -> None:
        """Forget the conversation."""
        self.turns = []
        self._draw_history()

    def _draw_history(self) -> None:
        rows = []
        for turn in self.turns:
            rows.append(f'<div><b>you</b>: {fmt.esc(turn["user"])}</div>')
            answer = f'<div><b>model</b>: {fmt.esc(turn["tuned"])}'
            if turn.get("base") is not None:
                answer += f' <span style="color:#777">· base: {fmt.esc(turn["base"])}</span>'
            rows.append(answer + "</div>")
        self.history.value = ('<div style="max-height:240px;overflow-y:auto;white-space:pre-wrap">'
                              + "".join(rows) + "</div>") if rows else ""

    def _show_compare(self, change=None) -> None:
        self.base_box.layout.display = None if self.compare.value else "none"

    def _clicked(self, _b=None) -> None:
        if self.busy or not self._can or not self.prompt.value.strip():
            return
        if self.on_generate is not None:
            prompt = self.prompt.value
            self.on_generate(self.run_dir, self.checkpoint.value, self.messages(prompt),
                             self.messages(prompt, "base") if self.compare.value else None, self.settings())
