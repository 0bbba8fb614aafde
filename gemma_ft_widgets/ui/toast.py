"""A toast-like banner at the top of the panel, for front ends without the JupyterLab extension
(Colab, Kaggle, VS Code): the notices its toasts give (gemma_ft_widgets/notices.py) when the
panel's run finishes, fails, stops, is orphaned or stalls.

Like the extension, it announces only what happens while it watches: the first poll is a
baseline (a run that had already ended is shown by the outcome view anyway). Dismissing it
hides that notice; the next one shows again.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from .. import notices
from . import fmt

KIND = {"success": "ok", "error": "error", "warning": "warn", "info": "info"}


class ToastBanner(w.HBox):
    """Public names: `text` [gft-toast-text], `close_button` [gft-toast-close], `notice` (the
    dict shown, None when hidden). The banner itself [gft-toast]."""

    def __init__(self, **kwargs):
        self.text = w.HTML(layout=w.Layout(flex="1 1 0%", min_width="0"))  # shrinks: the close button stays in view
        self.text.add_class("gft-toast-text")
        self.close_button = w.Button(icon="times", tooltip="dismiss", layout=w.Layout(width="36px", flex="0 0 auto"))
        self.close_button.add_class("gft-toast-close")
        self.close_button.on_click(lambda _b: self.dismiss())
        super().__init__([self.text, self.close_button], layout=w.Layout(display="none", align_items="center"),
                         **kwargs)
        self.add_class("gft-toast")
        self.notice: dict[str, str] | None = None
        self._seen: set[str] = set()
        self._baseline = True

    def watch(self, status: Any) -> None:
        """Called with the workspace's status on every poll."""
        prog = notices.progress(status) if getattr(status, "active", False) else None
        note = notices.notice(status, prog)
        baseline, self._baseline = self._baseline, False
        if note is None or note["key"] in self._seen:
            return
        self._seen.add(note["key"])
        if not baseline:
            self.show(note)

    def show(self, note: dict[str, str]) -> None:
        """Show a notice (title, text, level)."""
        self.notice = note
        self.text.value = fmt.note(f"<b>{fmt.esc(note['title'])}:</b> {fmt.esc(note['text'])}", KIND[note["level"]])
        self.layout.display = None

    def dismiss(self) -> None:
        """Hide the banner."""
        self.notice = None
        self.layout.display = "none"
