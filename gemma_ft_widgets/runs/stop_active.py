"""Stopping a workspace's active run: find it (a live run whose lock was deleted gets it
back first), wait for a start that is launching it, stop it through its scheduler or by
signals (runs/stopping.py), and say what happened in the report.
"""

from __future__ import annotations

import os
from typing import Any

from . import guards, lockfile
from .errors import Remedy, RunError
from .lockfile import LockRead
from .stopping import StopReport, stop_processes


def stop_active(manager: Any, force: bool, timeout: float, term_timeout: float, kill_timeout: float) -> StopReport:
    """RunManager.stop with its stop mutex held (see there). `manager`: that RunManager
    (not imported here: it imports this module)."""
    lock = _lock_restored_if_lost(manager)
    if lock.data is None:
        msg = "nothing to stop: no active run" if not lock.present else \
            f"nothing to stop: the lock file is unreadable ({lock.error})"
        st = manager.status()
        return StopReport(None, nothing_to_stop=True, state=st.state, reason=st.reason, message=msg,
                          remedies=(Remedy.CLEAN,) if lock.present else ())
    if lock.data.get("scheduler"):  # its trainers are the scheduler's: stopped through it
        return _stop_scheduled(manager, lock, force, timeout)
    check, run_dir = guards.check_once_launched(manager.workspace, lock)
    name = os.path.basename(run_dir)
    if check.foreign:
        raise RunError(f"run {name} is active on host {check.data.get('hostname')}; "
                       "it cannot be verified or stopped from here")
    if not check.procs:
        st = manager.status(run_dir)
        return StopReport(run_dir, nothing_to_stop=True, state=st.state, reason=st.reason,
                          message=f"nothing to stop: the processes of {name} are already gone "
                                  f"({st.state.value}: {st.reason})")
    report = stop_processes(manager.workspace, check, force, timeout, term_timeout, kill_timeout)
    st = manager.status(run_dir)
    report.state, report.reason = st.state, st.reason
    report.message = (f"stopped {name} in {report.seconds:.1f} s ({', '.join(report.sent) or 'no signal needed'}); "
                      f"now {st.state.value}" + (f": {st.reason}" if st.reason else "")
                      + ("" if report.group_gone else "; WARNING: some processes of the group remain"))
    return report


def _lock_restored_if_lost(manager: Any) -> LockRead:
    """The workspace lock; a live run whose lock was deleted gets it back first (so it is stopped)."""
    lock = lockfile.read_lock(manager.workspace)
    if not lock.present:
        for run_dir in guards.unlocked_live_runs(manager.folders, lock):
            try:
                manager.restore_lock(run_dir)
            except RunError:
                continue
            return lockfile.read_lock(manager.workspace)
    return lock


def _stop_scheduled(manager: Any, lock: LockRead, force: bool, timeout: float) -> StopReport:
    """Stop a run whose trainers a scheduler runs, through the scheduler (runs/scheduled.py)."""
    from .scheduled import stop_job

    report = stop_job(manager.workspace, lock.data, force, timeout)
    st = manager.status(report.run_dir)
    report.state, report.reason = st.state, st.reason
    report.message = report.message or (f"stopped {st.run_name} in {report.seconds:.1f} s ("
                                        f"{', '.join(report.sent)}); now {st.state.value}: {st.reason}")
    return report
