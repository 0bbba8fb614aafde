"""The one exception type of the run layer. Its message states the fact ("a run is already
active: X"); what the user can do about it is a list of `Remedy` values, which each caller words
in its own terms (the CLI as commands: cli.remedy_text; the panel as its buttons:
ui/fmt.run_error), so this layer never names a command or a button.
"""

from __future__ import annotations

import enum


class Code(str, enum.Enum):
    """Why an operation was refused, for callers that act on it rather than show it."""

    ACTIVE = "active"  # a run of this workspace is alive (locked, or alive without its lock)
    FOREIGN = "foreign"  # the lock belongs to a run on another host
    IN_USE = "in_use"  # the run's own processes still use its folder
    NOT_RESUMABLE = "not_resumable"  # the run's state or checkpoints leave nothing to resume
    REFUSED = "refused"  # anything else: the message says what


class Remedy(str, enum.Enum):
    """What the user can do about a refusal (in the order the message lists them)."""

    STOP = "stop"  # stop the active run
    CLEAN = "clean"  # clear an unreadable or stale workspace lock
    CLEAN_FORCE = "clean_force"  # clear the lock of a run on a host that is gone
    RESTORE_LOCK = "restore_lock"  # put a lost lock back for a run that still trains
    RESUME = "resume"  # resume the run from its newest checkpoint
    EXTEND = "extend"  # resume a FINISHED run to a larger max_steps
    NEW_RUN = "new_run"  # nothing of this run can go on: start a new one
    QUEUE_RESUME = "queue_resume"  # let a paused queue go on, or go on past an ORPHANED run


class RunError(RuntimeError):
    """A refused or failed run operation. `code` says why, `remedies` what to do about it;
    `run` (a run's folder name) and `workspace` are what the remedies act on."""

    def __init__(self, message: str, code: Code = Code.REFUSED, remedies: tuple[Remedy, ...] = (),
                 run: str | None = None, workspace: str | None = None):
        super().__init__(message)
        self.code, self.remedies, self.run, self.workspace = code, tuple(remedies), run, workspace
