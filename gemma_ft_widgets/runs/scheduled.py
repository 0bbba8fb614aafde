"""Runs whose trainers a scheduler runs (Slurm today): launching one, asking about its job,
stopping it through the scheduler.

The run folder and the workspace lock are the same as for a local run, so `gemma-ft status`,
list, the panel and `gemma-ft stop` see it; the lock records the job (`scheduler`: kind, job
id) instead of pids, since the processes may be on other hosts. Nothing here signals a process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import contract
from . import identity, lockfile, slurm
from .errors import RunError
from .jobs import job_of
from .results import write_result
from .status import read_result
from .stopping import StopReport

POLL_S = 0.5
CANCEL_WAIT_S = 120.0  # after scancel: Slurm's KillWait (30 s by default) and the trainers' save


def launch_slurm(manager, config: Any, opts: slurm.Options, submit: bool) -> tuple[str, str, str | None]:
    """Create the run folder with its config and batch script; with `submit`, take the workspace
    lock and sbatch it. Returns (run folder, script path, job id or None). Bad options and a
    config that does not fit are refused before anything is created."""
    from ..config import TrainingConfig
    from .launch import package_env

    try:
        opts.check()
    except ValueError as e:
        raise RunError(str(e)) from None
    raw = config.to_dict() if isinstance(config, TrainingConfig) else dict(config)
    given = raw.get("num_processes", 1)
    if given not in (1, opts.processes):
        raise RunError(f"the config says num_processes {given}, but --nodes {opts.nodes} x --tasks-per-node "
                       f"{opts.tasks_per_node} start {opts.processes} process(es)")
    cfg = TrainingConfig.from_dict({**raw, "num_processes": opts.processes})
    manager._make_workspace()
    run_dir = manager._new_run_dir(cfg.run_name_prefix())
    os.mkdir(run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg.to_dict())
    path = os.path.join(run_dir, slurm.SCRIPT_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(slurm.script(run_dir, manager.workspace, manager.trainer, 1, opts, package_env()))
    os.chmod(path, 0o755)
    if not submit:
        contract.append_status(run_dir, "IDLE", f"batch script written, not submitted: sbatch {path}")
        return run_dir, path, None
    from .job_supervisor import lock_data

    with manager._write_mutex:
        manager._wait_for_ending_run()
        with lockfile.guard(manager.workspace):
            lock = lockfile.read_lock(manager.workspace, locked=True)
            manager._clear_stale_or_raise(lock, "a Slurm launch")
            lockfile.create_lock(manager.workspace, lock_data(run_dir, 1, manager.trainer, None,
                                                              identity.describe(os.getpid())))
        mine = lambda d: lockfile.names(d, run_dir, 1)  # noqa: E731
        try:
            job_id = slurm.submit(path)
        except slurm.SlurmError as e:
            write_result(run_dir, 1, None, None, stopped=False, override={"state": "FAILED", "reason": str(e)})
            lockfile.clear_lock_if(manager.workspace, mine)
            raise RunError(f"{e} (the run folder {run_dir} and its script are kept)") from None
        # The job may already have confirmed the lock with its id: the merge keeps it.
        lockfile.update_lock(manager.workspace, mine, {"scheduler": {"kind": "slurm", "job_id": job_id},
                                                      "launcher": None})
    contract.append_status(run_dir, "STARTING", f"submitted to Slurm as job {job_id}")
    return run_dir, path, job_id


def submitted_through_slurm(run_dir: str) -> bool:
    """The run was launched with `gemma-ft launch --slurm` (its batch script is in the folder):
    its resume is a new job, not trainers on this host."""
    return os.path.isfile(os.path.join(run_dir, slurm.SCRIPT_NAME))


def resume_lock(manager, run_dir: str, attempt: int) -> dict:
    from .job_supervisor import lock_data

    return lock_data(run_dir, attempt, manager.trainer, None, identity.describe(os.getpid()))


def resubmit_slurm(manager, run_dir: str, attempt: int) -> str:
    """With the lock of `attempt` already taken (resume_lock): point the run's batch script at
    that attempt and sbatch it; the trainers resume from the newest checkpoint, as under the
    local supervisor. Returns the job id."""
    import re

    path = os.path.join(run_dir, slurm.SCRIPT_NAME)
    text = open(path, encoding="utf-8").read()
    text, n = re.subn(r"(--attempt )\d+", lambda m: f"{m.group(1)}{attempt}", text)
    mine = lambda d: lockfile.names(d, run_dir, attempt)  # noqa: E731
    if n != 1:
        lockfile.clear_lock_if(manager.workspace, mine)
        raise RunError(f"{path} is not the batch script `gemma-ft launch --slurm` wrote (no single --attempt); "
                       "launch the run again")
    contract.atomic_write_text(path, text, mode=0o755)
    try:
        job_id = slurm.submit(path)
    except slurm.SlurmError as e:
        write_result(run_dir, attempt, None, None, stopped=False, override={"state": "FAILED", "reason": str(e)})
        lockfile.clear_lock_if(manager.workspace, mine)
        raise RunError(f"{e} (the run folder {run_dir} is kept)") from None
    lockfile.update_lock(manager.workspace, mine, {"scheduler": {"kind": "slurm", "job_id": job_id},
                                                  "launcher": None})
    contract.append_status(run_dir, "STARTING", f"resume submitted to Slurm as job {job_id}")
    return job_id


def stop_job(workspace: str, data: dict[str, Any], force: bool, timeout: float) -> StopReport:
    """Stop a scheduled run through its scheduler: its trainers get SIGINT (`scancel
    --signal=INT`: a graceful stop, one checkpoint); a job that has not ended after `timeout`
    s, or `force`, is cancelled (`scancel`). Returns once the job ended."""
    run_dir, attempt = data["run_dir"], data.get("attempt")
    job = job_of(data)
    job_id = job["job_id"]
    t0 = time.monotonic()
    report = StopReport(run_dir=run_dir)
    if job_id is None:
        report.nothing_to_stop, report.message = True, "nothing to stop: the run was not submitted yet"
        return report
    contract.atomic_write_json(os.path.join(run_dir, contract.STOP_REQUEST_NAME), {
        "requested_at": contract.utc_now(), "force": force, "by_pid": os.getpid(), "attempt": attempt})
    contract.append_status(run_dir, "STOPPING", f"{'forced ' if force else ''}stop requested: cancelling "
                           f"Slurm job {job_id}")
    ended = lambda: job_of(data)["active"] is False or _has_result(run_dir, attempt)  # noqa: E731
    try:
        done = False
        if not force and job["state"] == "RUNNING":
            slurm.cancel(job_id, "INT")
            report.sent.append(f"SIGINT to the tasks of Slurm job {job_id} (scancel --signal=INT)")
            done = _wait(ended, timeout)
        if not done:
            slurm.cancel(job_id)
            report.sent.append(f"scancel {job_id}")
            _wait(lambda: job_of(data)["active"] is False, CANCEL_WAIT_S)
    except slurm.SlurmError as e:
        raise RunError(f"cannot stop Slurm job {job_id}: {e}") from None
    # The job supervisor writes the result and clears the lock; a job cancelled while pending
    # (or killed before it could) leaves both to us.
    _wait(lambda: job_of(data)["active"] is False, CANCEL_WAIT_S)
    if not _has_result(run_dir, attempt):
        write_result(run_dir, attempt, None, data.get("started_at"), stopped=True, override={
            "state": "ABORTED", "reason": f"Slurm job {job_id} was cancelled (scancel) before it wrote a result"})
    lockfile.clear_lock_if(workspace, lambda d: lockfile.names(d, run_dir, attempt))
    report.group_gone = job_of(data)["active"] is False
    report.seconds = round(time.monotonic() - t0, 3)
    return report


def _has_result(run_dir: str, attempt: Any) -> bool:
    result, _ = read_result(run_dir)
    return result is not None and result.get("attempt") == attempt


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
