"""How the project's own subprocesses are launched: the environment they inherit, the
supervisor's command line, and the workspace lock that vouches for a launched run.

Its own module so that the manager, the sampler and the notifier share it without importing
each other.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import threading
from typing import Any

import psutil

from .. import contract
from . import identity, lockfile
from .errors import RunError
from .liveness import SUPERVISOR_MODULE, attempt_of
from .metrics import MetricsSummary


def package_env() -> dict[str, str]:
    """The environment for our subprocesses: they import this very copy of the package."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return dict(os.environ)  # installed: importable anyway; never put site-packages first
    path = os.environ.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root] + [p for p in parts if p != root])}


def supervisor_arguments(prog: str) -> argparse.ArgumentParser:
    """The command line of a supervisor: runs/supervisor.py, and the Slurm job's (runs/job_supervisor.py)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("run_dir")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    return parser


def supervisor_command(run_dir: str, workspace: str, trainer: str, attempt: int) -> list[str]:
    """The command line of the detached supervisor of one attempt (see supervisor_arguments)."""
    return [sys.executable, "-m", SUPERVISOR_MODULE, run_dir, "--workspace", workspace,
            "--trainer", trainer, "--attempt", str(attempt)]


def lock_data(run_dir: str, attempt: int, trainer: str) -> dict[str, Any]:
    """The workspace lock of an attempt about to launch: this process vouches for it until
    the supervisor writes its own pid in."""
    return {
        "run_dir": run_dir, "supervisor_pid": None, "trainer_pid": None, "pgid": None,
        "create_times": {}, "cmdline": None, "trainer_cmdline": None,
        "hostname": identity.hostname(), "boot_id": identity.boot_id(),
        "started_at": contract.utc_now(), "attempt": attempt, "trainer_module": trainer,
        "launcher": identity.describe(os.getpid()),
    }


def launch_supervisor(workspace: str, trainer: str, run_dir: str, attempt: int) -> None:
    """Start the attempt's supervisor detached and write its identity into the lock (which
    lock_data made). On failure the lock is cleared, status.log says FAILED, RunError."""
    cmd = supervisor_command(run_dir, workspace, trainer, attempt)
    mine = lambda d: lockfile.names(d, run_dir, attempt)  # noqa: E731
    if attempt == 1:
        contract.append_status(run_dir, "STARTING", "launching the supervisor")
    try:
        with open(os.path.join(run_dir, contract.SUPERVISOR_LOG_NAME), "ab") as log:
            # A new session: no kernel restart, closed terminal or Ctrl+C reaches the run.
            proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, env=package_env())
    except OSError as e:
        lockfile.clear_lock_if(workspace, mine)
        contract.append_status(run_dir, "FAILED", f"cannot launch the supervisor: {e}")
        raise RunError(f"cannot launch the supervisor: {e}") from e
    # Popen returns after exec, so the create time and command line are the final ones.
    ctime = psutil.Process(proc.pid).create_time()
    lockfile.update_lock(workspace, lambda d: mine(d) and d.get("supervisor_pid") in (None, proc.pid), {
        "supervisor_pid": proc.pid, "pgid": proc.pid, "cmdline": cmd, "create_times": {str(proc.pid): ctime}})
    # Only to reap it when it exits (else it lingers as a zombie of this process).
    threading.Thread(target=proc.wait, name=f"reap-supervisor-{proc.pid}", daemon=True).start()


def restored_lock_data(run_dir: str, procs: dict[str, psutil.Process], trainer: str) -> dict[str, Any]:
    """The lock of a live run whose lock was deleted, from its processes (runs/liveness.py);
    its attempt is left for the caller. psutil.Error when a process ended meanwhile."""
    data = lock_data(run_dir, 1, trainer)
    data["launcher"] = None
    sup, trainer_proc = procs.get("supervisor"), procs.get("trainer")
    for role, p in (("supervisor", sup), ("trainer", trainer_proc)):
        if p is None:
            continue
        who = identity.describe(p.pid)
        data[f"{role}_pid"] = p.pid
        data["cmdline" if role == "supervisor" else "trainer_cmdline"] = who["cmdline"]
        data["create_times"][str(p.pid)] = who["create_time"]
    data["pgid"] = os.getpgid((sup or trainer_proc).pid)
    data["started_at"] = _iso_time((sup or trainer_proc).create_time())
    if trainer_proc is not None:
        cmd = data["trainer_cmdline"]
        data["trainer_module"] = cmd[2] if len(cmd) > 2 else trainer
    return data


def restore_lock(workspace: str, run_dir: str, procs: dict[str, psutil.Process], trainer: str) -> None:
    """With the guard held: write the lock of a live run whose lock was deleted, from its
    processes; its attempt from the supervisor's command line, else its metrics."""
    try:
        data = restored_lock_data(run_dir, procs, trainer)
    except (psutil.Error, ProcessLookupError) as e:
        raise RunError(f"cannot restore the lock of {os.path.basename(run_dir)}: its processes ended "
                       f"meanwhile ({e})") from e
    sup = procs.get("supervisor")
    data["attempt"] = ((attempt_of(sup) if sup else None)
                       or (MetricsSummary(run_dir).refresh().last_start or {}).get("attempt") or 1)
    lockfile.create_lock(workspace, data)
    contract.append_status(run_dir, "RUNNING", "workspace lock restored (it had been deleted while "
                           "the run went on)")


def _iso_time(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
