"""The `gemma-ft` command that carries out each runs.Remedy: how the CLI, and the server
extension (whose users have a terminal beside the notebook), word what to do about a refusal.
The panel words them as its own buttons (ui/fmt.run_error).
"""

from __future__ import annotations

import shlex
from typing import Any

from .runs.errors import Remedy, RunError


def command_text(remedy: Remedy, run: str | None, workspace: str | None) -> str:
    """One remedy as an instruction naming its command."""
    ws = f" --workspace {shlex.quote(workspace)}" if workspace else ""
    name = shlex.quote(run) if run else "RUN"
    return {
        Remedy.STOP: f"stop it with `gemma-ft stop{ws}`",
        Remedy.CLEAN: f"clear it with `gemma-ft clean{ws}`",
        Remedy.CLEAN_FORCE: f"if that host is gone, clear it with `gemma-ft clean --force{ws}`",
        Remedy.RESTORE_LOCK: f"restore its lock with `gemma-ft restore-lock {name}{ws}`",
        Remedy.RESUME: f"resume it with `gemma-ft resume {name}{ws}`",
        Remedy.EXTEND: f"to train it further, `gemma-ft resume {name} --max-steps N{ws}`",
        Remedy.NEW_RUN: "start a new run",
        Remedy.QUEUE_RESUME: f"let the queue go on with `gemma-ft queue resume{ws}`",
    }[Remedy(remedy)]


def with_commands(message: Any, remedies: tuple = (), run: str | None = None,
                  workspace: str | None = None) -> str:
    """`message`, then what to do as commands: "…; stop it with `gemma-ft stop …`"."""
    steps = [command_text(r, run, workspace) for r in remedies]
    return "; ".join([str(message), *steps]) if steps else str(message)


def error_text(e: RunError) -> str:
    """A RunError as the CLI shows it."""
    return with_commands(e, e.remedies, e.run, e.workspace)
