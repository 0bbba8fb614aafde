"""The checks a lifecycle operation makes before it takes the workspace lock or touches a run
folder: refuse while a run is alive (locked or not), clear a provably dead lock, and give an
ending run a moment to let go. Used by RunManager and runs/scheduled.py (through RunManager).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .. import contract
from . import liveness, lockfile
from .errors import Code, Remedy, RunError
from .lockfile import LockRead
from .state import ENDED_STATES, Proc, State
from .status import LockCheck, RunStatus, check_lock, read_result
from .workspace import Workspace

ENDING_GRACE_S = 15.0  # how long an ended run's supervisor may take to let go of its lock and flock


def clear_stale_or_raise(ws: str, lock: LockRead, by: str,
                         status_of: Callable[[str, LockRead], RunStatus]) -> None:
    """With the guard held: remove a provably dead lock, or refuse naming the active run."""
    if not lock.present:
        return
    if lock.data is None:
        lockfile.remove_lock(ws)
        return
    run_dir = lock.data["run_dir"]
    name = os.path.basename(run_dir)
    check = check_lock(lock.data)
    if check.foreign:
        raise RunError(f"a run is active on host {lock.data.get('hostname')}: {name}. It cannot be stopped "
                       f"from here", Code.FOREIGN, (Remedy.CLEAN_FORCE,), name, ws)
    if not check.stale:
        st = status_of(run_dir, lock)
        progress = f", step {st.step}/{st.max_steps}" if st.step is not None else ""
        raise RunError(f"a run is already active: {name} ({st.state.value}{progress})",
                       Code.ACTIVE, (Remedy.STOP,), name, ws)
    why = "machine rebooted" if check.rebooted else "its processes are gone"
    if (lock.data.get("scheduler") or {}).get("kind") == "k8s" and os.path.isdir(run_dir):
        from .scheduled import record_end  # a Kubernetes Job has no supervisor to write its end
        record_end(run_dir, lock.data, check.job or {})
    ended = status_of(run_dir, lock).state if os.path.isdir(run_dir) else State.ORPHANED
    lockfile.remove_lock(ws)
    if os.path.isdir(run_dir):  # an ended run (its trainer's `final` says so) keeps its label
        contract.append_status(run_dir, ended.value if ended in ENDED_STATES else "ORPHANED",
                               f"lock cleared by {by} ({why})")


def wait_for_ending_run(ws: str, timeout: float = ENDING_GRACE_S) -> None:
    """A run that wrote its result is about to drop its lock: let it, rather than refuse."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = lockfile.read_lock(ws)
        if lock.data is None:
            return
        result, _ = read_result(lock.data["run_dir"])
        if result is None or result.get("attempt") != lock.data.get("attempt"):
            return
        if not check_lock(lock.data).procs:
            return  # nobody left to drop it: it is stale and will be cleared
        time.sleep(0.05)


def unlocked_live_runs(folders: Workspace, lock: LockRead) -> list[str]:
    """Run folders whose processes live although the lock does not name them."""
    return [d for d in folders.run_dirs()
            if not (lock.data and lockfile.names(lock.data, d)) and liveness.held(d)]


def refuse_unlocked_live_runs(folders: Workspace, lock: LockRead) -> None:
    """RunError naming the first run alive without its lock (a start must not join it)."""
    for run_dir in unlocked_live_runs(folders, lock):
        name = os.path.basename(run_dir)
        raise RunError(f"a run is already active: {name} (its workspace lock is missing, but its processes "
                       f"are alive)", Code.ACTIVE, (Remedy.STOP, Remedy.RESTORE_LOCK), name, folders.path)


def refuse_if_in_use(ws: str, run_dir: str, what: str) -> None:
    """Refuse to `what` a folder any process of the run still uses (the lock may be gone)."""
    procs = liveness.processes(run_dir)
    if "trainer" not in procs and read_result(run_dir)[0] is not None:
        procs = {}  # only the supervisor, finishing up after writing the result
    if not procs:
        # No live process of the run, but one that is ending may still hold its flock for a
        # moment: the supervisor after its result, a trainer SIGKILLed with its group just
        # now (an orphan verdict comes when the supervisor is gone). Wait, as for the lock.
        deadline = time.monotonic() + ENDING_GRACE_S
        while liveness.held(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
    if procs or liveness.held(run_dir):
        pids = ", ".join(f"{r} pid {p.pid}" for r, p in procs.items()) or "a process holds its flock"
        raise RunError(f"cannot {what} {os.path.basename(run_dir)}: its processes are alive ({pids})",
                       Code.IN_USE, (Remedy.STOP,), os.path.basename(run_dir), ws)


def check_once_launched(ws: str, lock: LockRead) -> tuple[LockCheck, str]:
    """(check_lock of the lock, its run folder), after waiting up to 5 s for a start that is
    launching the supervisor right now (a stop must find its processes)."""
    check = check_lock(lock.data)
    deadline = time.monotonic() + 5.0
    while not check.procs and check.launcher == Proc.ALIVE and time.monotonic() < deadline:
        time.sleep(0.05)
        lock = lockfile.read_lock(ws)
        if lock.data is None:
            break
        check = check_lock(lock.data)
    return check, (lock.data["run_dir"] if lock.data else check.data["run_dir"])
