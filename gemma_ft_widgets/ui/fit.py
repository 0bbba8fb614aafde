"""The form's fit row: a target dropdown, whether the run fits it, "Make it fit" and "Start
anyway" (the logic is gemma_ft_widgets/fit.py).

`FitAdvisor` is the view state (traitlets, no widgets), so tests drive it without a browser;
`FitRow` shows it. The form calls `FitRow.update(config)` on every change and reads
`state.blocks_start`: a run whose estimate does not fit THIS machine disables Start, with the
reason, whichever target is selected; "Start anyway" then starts it deliberately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from .. import fit
from . import fmt, layout


class FitAdvisor(t.HasTraits):
    """The fit row's state (see the module docstring): the selected target, the verdict on it, and
    whether Start is blocked."""

    target = t.Unicode(fit.THIS_MACHINE)  # a key of `targets`
    verdict_text = t.Unicode("")
    fits = t.Bool(None, allow_none=True)  # on the selected target; None: unknown or no config
    blocks_start = t.Bool(False)  # the run does not fit this machine
    block_reason = t.Unicode("")
    fix_text = t.Unicode("")  # what "Make it fit" changed, or why it could not

    def __init__(self, machine: fit.Target | None = None, **kwargs):
        super().__init__(**kwargs)
        self.machine = machine or fit.this_machine()
        self.targets: dict[str, fit.Target] = {fit.THIS_MACHINE: self.machine, **fit.TARGETS}
        self.config: Any = None
        self.observe(lambda _c: self.update(self.config), "target")

    def options(self) -> list[tuple[str, str]]:
        """The target dropdown's (label, key) options: this machine first."""
        return [(target.label, key) for key, target in self.targets.items()]

    def update(self, config: Any) -> None:
        """Re-judge `config` (None while the form has errors)."""
        self.config = config
        if config is None:
            self.verdict_text, self.fits, self.blocks_start, self.block_reason = "", None, False, ""
            return
        chosen = fit.verdict(config, self.targets[self.target])
        here = chosen if self.target == fit.THIS_MACHINE else fit.verdict(config, self.machine)
        self.verdict_text, self.fits = chosen.text, chosen.fits
        self.block_reason = here.text if here.fits is False else ""
        self.blocks_start = here.fits is False

    def make_it_fit(self) -> fit.Fix | None:
        """The cheapest change that fits the selected target (not applied here: the form does)."""
        target = self.targets[self.target]
        found = fit.make_it_fit(self.config, target) if self.config is not None else None
        if found is None:
            self.fix_text = (f"Nothing fits {target.label} by quantization, remat, a smaller batch or a "
                             f"sequence down to {fit.MIN_SEQ_LEN}: pick a smaller model or a larger target.")
        elif not found.changes:
            self.fix_text = f"It already fits {target.label}."
        else:
            self.fix_text = f"To fit {target.label}, changed: {found.describe()}."
        return found


class FitRow(w.VBox):
    """Public names: `state`, `target`, `verdict`, `make_fit_button`, `anyway_button`, `message`."""

    def __init__(self, apply: Callable[[dict[str, Any]], None], start_anyway: Callable[[], None],
                 machine: fit.Target | None = None, **kwargs):
        self.state = FitAdvisor(machine)
        self._apply = apply
        self.target = w.Dropdown(options=self.state.options(), value=fit.THIS_MACHINE, description="Target",
                                 style={"description_width": "150px"}, layout=w.Layout(width="420px"))
        self.target.add_class("gft-fit-target")
        t.link((self.target, "value"), (self.state, "target"))
        self.verdict = w.HTML()
        self.verdict.add_class("gft-fit-verdict")
        self.make_fit_button = w.Button(description="Make it fit", icon="compress", layout=w.Layout(width="130px"),
                                        tooltip="the cheapest change that fits the target: quantization, remat, "
                                                "then a smaller batch, then a shorter sequence")
        self.make_fit_button.add_class("gft-make-fit")
        self.make_fit_button.on_click(self._make_fit)
        self.anyway_button = w.Button(description="Start anyway", icon="exclamation-triangle", button_style="warning",
                                      layout=w.Layout(width="150px", display="none"),
                                      tooltip="start although the estimate does not fit this machine")
        self.anyway_button.add_class("gft-start-anyway")
        self.anyway_button.on_click(lambda _b: start_anyway())
        self.message = w.HTML()
        self.message.add_class("gft-fit-message")
        self.state.observe(self._show, ["verdict_text", "fits", "fix_text"])
        # Rows that wrap at 800 px instead of pushing the verdict off-screen (ui/layout.py).
        super().__init__([layout.row([layout.keep_size(self.target), layout.message(self.verdict)], align="center"),
                          layout.row([self.make_fit_button, layout.message(self.message)], align="center")],
                         **kwargs)
        self.add_class("gft-fit")

    def update(self, config: Any) -> None:
        """Judge the form's config again (None while it has errors); Make it fit only when it does not fit."""
        self.state.update(config)
        self.make_fit_button.disabled = config is None or self.state.fits is not False

    def _show(self, _change=None) -> None:
        s = self.state
        if s.fits is None:
            self.verdict.value = f'<span style="color:#888">{fmt.esc(s.verdict_text)}</span>' if s.verdict_text else ""
        else:
            color, mark = ("#15803d", "✔") if s.fits else ("#b91c1c", "✘")
            self.verdict.value = f'<span style="color:{color}"><b>{mark}</b> {fmt.esc(s.verdict_text)}</span>'
        self.make_fit_button.disabled = s.config is None or s.fits is not False
        self.message.value = fmt.esc(s.fix_text)

    def _make_fit(self, _button=None) -> None:
        found = self.state.make_it_fit()
        if found is not None and found.changes:
            text = self.state.fix_text
            self._apply({k: found.values[k] for k, _, _ in found.changes})
            self.state.fix_text = text  # the form's re-validation must not hide what changed
        self._show()
