"""The queue section: runs waiting for the active one to end, what the queue waits for, and
Pause / Resume / Remove. The panel feeds it `runs.queue.QueueState`s; actions go back through
callbacks (the panel runs them in worker threads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from . import fmt


def _row(i: int, e: Any) -> str:
    c = e.config
    group = f' <span style="color:#666">[{fmt.esc(e.group)}]</span>' if e.group else ""
    return (f"<tr><td>{i}</td><td><code>{fmt.esc(e.id)}</code></td><td>{fmt.esc(e.label())}{group}</td>"
            f"<td>{fmt.esc(c.get('model'))} · {fmt.esc(c.get('method'))}</td>"
            f"<td>lr {fmt.number(c.get('learning_rate'), 3)}</td><td>{fmt.esc(c.get('max_steps'))} steps</td></tr>")


class QueueView(w.VBox):
    """Public names: `summary`, `table`, `pick` (Dropdown of entry ids), `remove_button`,
    `pause_button`, `resume_button`; `show(state)` updates them."""

    def __init__(self, on_remove: Callable[[str], None] | None = None,
                 on_pause: Callable[[], None] | None = None, on_resume: Callable[[], None] | None = None,
                 **kwargs):
        self.summary = w.HTML()
        self.summary.add_class("gft-queue-summary")
        self.table = w.HTML()
        self.table.add_class("gft-queue-table")
        self.pick = w.Dropdown(options=[], layout=w.Layout(width="220px"))
        self.remove_button = w.Button(description="Remove", icon="times", layout=w.Layout(width="110px"))
        self.pause_button = w.Button(description="Pause queue", icon="pause", layout=w.Layout(width="130px"))
        self.resume_button = w.Button(description="Resume queue", icon="play", layout=w.Layout(width="140px"))
        for b, name in ((self.remove_button, "remove"), (self.pause_button, "pause"), (self.resume_button, "resume")):
            b.add_class(f"gft-queue-{name}")
        self.remove_button.on_click(lambda _b: on_remove and self.pick.value and on_remove(self.pick.value))
        self.pause_button.on_click(lambda _b: on_pause and on_pause())
        self.resume_button.on_click(lambda _b: on_resume and on_resume())
        self._shown: tuple = ()
        super().__init__([self.summary, self.table,
                          w.HBox([self.pick, self.remove_button, self.pause_button, self.resume_button],
                                 layout=w.Layout(flex_flow="row wrap", grid_gap="4px"))], **kwargs)
        self.add_class("gft-queue-view")

    @staticmethod
    def title(state: Any) -> str:
        """The section's title: "Queue (N)", and "· paused"."""
        n = len(state.entries)
        return f"Queue ({n})" + (" · paused" if state.paused else "")

    def show(self, state: Any) -> None:
        """Draw a QueueState (only when it changed): the summary, the entries, the pick list and the buttons."""
        key = (tuple((e.id, e.label()) for e in state.entries), state.paused, state.pause_reason, state.blocked)
        if key == self._shown:
            return
        self._shown = key
        n = len(state.entries)
        if state.paused:
            text = fmt.note(f"Paused: {fmt.esc(state.pause_reason or 'by the user')}. Resume to go on.", "warn")
        elif not n:
            text = ('<span style="color:#666">Nothing queued. "Add to queue" in the form queues a run; it '
                    'starts by itself when the active run ends, even with no notebook open.</span>')
        else:
            text = fmt.note(fmt.esc(fmt.with_remedies(state.blocked, state.remedies(), state.blocked_by))
                            if state.blocked else "Starting the next run…", "info")
        self.summary.value = text
        rows = "".join(_row(i, e) for i, e in enumerate(state.entries, 1))
        self.table.value = (f'<table style="border-collapse:collapse;font-size:0.9em" cellpadding="3">{rows}</table>'
                            if rows else "")
        self.pick.options = [(f"{e.id} {e.label()}", e.id) for e in state.entries]
        self.remove_button.disabled = not n
        self.pause_button.layout.display = "none" if state.paused else None
        self.resume_button.layout.display = None if state.paused else "none"
