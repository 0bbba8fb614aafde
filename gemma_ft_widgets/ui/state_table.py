"""One table from a run's State to what the panel shows for it: the view, the badge's colours,
the progress bar's style and the actions offered. The panel, dashboard, outcome view and fmt
all read it, so a state's look is decided in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runs.state import State


@dataclass(frozen=True)
class Look:
    """What the panel shows for one state: view, badge, bar style and the actions offered."""

    view: str  # the panel's `view`: form | dashboard | finished | failed | orphaned
    badge: tuple[str, str]  # the state badge's background and text colour
    bar: str = ""  # the progress bar's style
    active: bool = False  # live: Abort (and Force while it stops), an ETA
    ended: bool = False  # the outcome view: its banner and New run
    resume: bool = False  # Resume, when the run can resume
    playground: bool = False  # Playground, with a checkpoint
    export: bool = False  # the Export row, with a checkpoint
    clean: bool = False  # Clean up (clears the lock, keeps the files)
    stderr: bool = False  # stderr's tail under the banner


LOOKS: dict[State, Look] = {
    State.IDLE: Look("form", ("#e0e0e0", "#333")),
    State.STARTING: Look("dashboard", ("#bbdefb", "#0d47a1"), "info", active=True),
    State.RUNNING: Look("dashboard", ("#c8e6c9", "#1b5e20"), "info", active=True),
    State.STOPPING: Look("dashboard", ("#ffe0b2", "#e65100"), "warning", active=True),
    State.FINISHED: Look("finished", ("#a5d6a7", "#1b5e20"), "success", ended=True, playground=True, export=True),
    State.ABORTED: Look("finished", ("#fff9c4", "#795548"), "warning", ended=True, resume=True, playground=True,
                       export=True),
    State.FAILED: Look("failed", ("#ffcdd2", "#b71c1c"), "danger", ended=True, resume=True, export=True,
                      stderr=True),
    State.ORPHANED: Look("orphaned", ("#ffccbc", "#bf360c"), "danger", ended=True, resume=True, clean=True),
}
UNKNOWN = Look("dashboard", ("#eee", "#333"))  # a state this version does not know

ACTIVE = tuple(s.value for s, lk in LOOKS.items() if lk.active)
ENDED = tuple(s.value for s, lk in LOOKS.items() if lk.ended)


def state_value(state: Any) -> str:
    """'RUNNING' for State.RUNNING or 'RUNNING'."""
    return str(getattr(state, "value", state) or "IDLE")


def look(state: Any) -> Look:
    """The look of a State or its name ('RUNNING')."""
    try:
        return LOOKS[State(state_value(state))]
    except ValueError:
        return UNKNOWN
