"""What the server extension answers, without tornado: one RunManager per configured workspace.

Every answer is derived again from the files and the process table (the managers keep only
their metrics-reading cache), so nothing here needs saving across a server restart.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from .. import notices
from ..runs import Run, RunError, RunManager, RunStatus

# The names RunManager gives run folders; anything else (a path, '..', '.hidden') is refused
# before the file system is asked.
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class NotFound(LookupError):
    """No such workspace or run (HTTP 404)."""

    pass


class BadRequest(ValueError):
    """A request the API refuses as malformed, e.g. a run name that is a path (HTTP 400)."""

    pass


def run_summary(st: RunStatus, prog: notices.Progress) -> dict[str, Any]:
    """What the status bar shows of a run."""
    return {
        "name": st.run_name, "state": st.state.value, "reason": st.reason, "active": st.active,
        "attempt": st.attempt, "step": st.step, "max_steps": st.max_steps, "loss": st.loss,
        "eval_loss": st.eval_loss, "tokens_per_s": st.tokens_per_s, "model": st.model,
        "started_at": st.started_at, "ended_at": st.ended_at, "elapsed_s": st.elapsed_s,
        "eta_s": prog.eta_s, "step_time_s": prog.step_time_s, "idle_s": prog.idle_s,
        "stalled": prog.stalled, "can_resume": st.can_resume, "foreign_host": st.foreign_host,
    }


class WorkspaceSet:
    """The configured workspaces, by index, and the answers of the API's routes."""

    def __init__(self, paths: list[str], stall_factor: float = notices.STALL_FACTOR,
                 stall_min_s: float = notices.STALL_MIN_S):
        self.managers = [RunManager(p) for p in paths]
        self.stall_factor, self.stall_min_s = stall_factor, stall_min_s

    def manager(self, index: Any) -> RunManager:
        """The RunManager of workspace `index`; NotFound for an index out of range."""
        try:
            return self.managers[int(index)]
        except (ValueError, IndexError):
            raise NotFound(f"no workspace {index!r}; there are {len(self.managers)}") from None

    def resolve(self, index: Any, name: str) -> tuple[RunManager, str]:
        """(manager, run folder) for a run name, resolved the way the CLI resolves it."""
        manager = self.manager(index)
        if not RUN_NAME.fullmatch(name or ""):
            raise BadRequest(f"invalid run name {name!r}: a run folder's name, no path")
        try:
            return manager, manager.resolve(name)
        except RunError as e:
            raise NotFound(str(e)) from None

    def _progress(self, st: RunStatus) -> notices.Progress:
        return notices.progress(st, time.time(), self.stall_factor, self.stall_min_s)

    # -- the routes ----------------------------------------------------------------------------
    def states(self) -> list[dict[str, Any]]:
        """Each workspace: its path, and its active (else newest) run with the notice it deserves."""
        out = []
        for i, m in enumerate(self.managers):
            entry: dict[str, Any] = {"index": i, "path": m.workspace, "exists": os.path.isdir(m.workspace),
                                     "run": None, "notice": None, "error": None}
            if entry["exists"]:
                try:
                    st = m.status()
                except (RunError, OSError) as e:
                    entry["error"] = str(e)
                else:
                    if st.run_dir:
                        prog = self._progress(st)
                        entry["run"] = run_summary(st, prog)
                        entry["notice"] = notices.notice(st, prog)
            out.append(entry)
        return out

    def runs(self, index: Any) -> list[dict[str, Any]]:
        """Every run of workspace `index` as a dict ([] while the workspace does not exist)."""
        m = self.manager(index)
        if not os.path.isdir(m.workspace):
            return []
        return [st.to_dict() for st in m.runs()]

    def run(self, index: Any, name: str) -> dict[str, Any]:
        """One run's status, status-bar summary, latest step and eval events, and notice."""
        m, run_dir = self.resolve(index, name)
        st = m.status(run_dir)
        prog = self._progress(st)
        return {"status": st.to_dict(), "summary": run_summary(st, prog),
                "metrics": {"step": prog.last_step, "eval": prog.last_eval},
                "notice": notices.notice(st, prog)}

    def stop(self, index: Any, name: str, force: bool = False) -> dict[str, Any]:
        """Stop the named run if it is the active one; never another run."""
        m, run_dir = self.resolve(index, name)
        report = Run(m, run_dir).stop(force=bool(force))
        out = report.to_dict()
        out["stopped"] = not report.nothing_to_stop
        return out
