"""Runs whose trainers a scheduler runs (Slurm, Kubernetes): launching one, asking about its
job, stopping it through the scheduler, resuming it as a new job.

The run folder and the workspace lock are the same as for a local run, so `gemma-ft status`,
list, the panel and `gemma-ft stop` see it; the lock records the job (`scheduler`: kind, job
id, namespace) instead of pids, since the processes may be on other hosts. Nothing here
signals a process. A Slurm job's own supervisor writes result.json; a Kubernetes Job has none
(its pods run the trainers), so its end is read from the trainers' `final` events and the
Job's state, and written down (record_end) by a stop or by the next start that clears its lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .. import contract
from . import identity, k8s, kubectl, lockfile, slurm
from .errors import RunError
from .jobs import job_of
from .metrics import MetricsSummary
from .results import write_result
from .state import SCHEDULER_NAMES as NAMES
from .status import read_result, stop_requested
from .stopping import StopReport

POLL_S = 0.5
CANCEL_WAIT_S = 120.0  # after scancel: Slurm's KillWait (30 s by default) and the trainers' save
FORCE_GRACE_S = 5.0  # a forced stop of a Kubernetes Job: the pods' grace period before SIGKILL
SCHEDULER_ERRORS = (slurm.SlurmError, kubectl.KubectlError)


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
    job_id = _lock_and_submit(manager, run_dir, {"kind": "slurm", "job_id": None}, lambda: slurm.submit(path),
                              "a Slurm launch")
    contract.append_status(run_dir, "STARTING", f"submitted to Slurm as job {job_id}")
    return run_dir, path, job_id


def launch_k8s(manager, config: Any, opts: k8s.Options, submit: bool) -> tuple[str, str, str | None]:
    """Create the run folder with its config and manifest; with `submit`, take the workspace
    lock and `kubectl apply` it. Returns (run folder, manifest path, Job name or None)."""
    path = k8s.write_manifest(manager, config, opts)
    run_dir = os.path.dirname(path)
    if not submit:
        contract.append_status(run_dir, "IDLE", f"Kubernetes manifest written, not applied: kubectl apply -f {path}")
        return run_dir, path, None
    name = k8s.job_name(os.path.basename(run_dir))
    # The Job's name is known before it exists: a launch that dies after the apply leaves a lock
    # that finds (and stops) the Job. While the launcher lives, a Job not there yet is starting.
    sched = {"kind": "k8s", "job_id": name, "namespace": opts.namespace}
    _lock_and_submit(manager, run_dir, sched, lambda: _apply(path, opts.namespace, name), "a Kubernetes launch")
    contract.append_status(run_dir, "STARTING", f"applied to Kubernetes: Job {name} in namespace {opts.namespace}")
    return run_dir, path, name


def _apply(path: str, namespace: str, name: str) -> str:
    kubectl.apply(path, namespace)
    return name


def _lock_and_submit(manager, run_dir: str, sched: dict, submit: Callable[[], str], by: str) -> str:
    """Take the workspace lock for attempt 1 of `run_dir` (refused while another run lives),
    then submit."""
    with manager._write_mutex:
        manager._wait_for_ending_run()
        with lockfile.guard(manager.workspace):
            lock = lockfile.read_lock(manager.workspace, locked=True)
            manager._clear_stale_or_raise(lock, by)
            lockfile.create_lock(manager.workspace, _lock_data(manager, run_dir, 1, sched))
        return _submit(manager.workspace, run_dir, 1, sched, submit)


def _lock_data(manager, run_dir: str, attempt: int, sched: dict) -> dict:
    from .job_supervisor import lock_data

    return {**lock_data(run_dir, attempt, manager.trainer, None, identity.describe(os.getpid())), "scheduler": sched}


def _submit(workspace: str, run_dir: str, attempt: int, sched: dict, submit: Callable[[], str]) -> str:
    """With the lock taken: submit; returns the job id, recorded in the lock. A submission that
    fails ends the attempt FAILED (its reason the scheduler's error), its lock cleared."""
    mine = lambda d: lockfile.names(d, run_dir, attempt)  # noqa: E731
    try:
        job_id = submit()
    except SCHEDULER_ERRORS as e:
        write_result(run_dir, attempt, None, None, stopped=False, override={"state": "FAILED", "reason": str(e)})
        lockfile.clear_lock_if(workspace, mine)
        raise RunError(f"{e} (the run folder {run_dir} is kept)") from None
    # A Slurm job may already have confirmed the lock with its id: the merge keeps it.
    lockfile.update_lock(workspace, mine, {"scheduler": {**sched, "job_id": job_id}, "launcher": None})
    return job_id


def scheduler_of(run_dir: str) -> str | None:
    """"slurm" or "k8s" for a run launched with `gemma-ft launch` (its batch script or manifest
    is in the folder): its resume is a new job, not trainers on this host."""
    if os.path.isfile(os.path.join(run_dir, slurm.SCRIPT_NAME)):
        return "slurm"
    return "k8s" if os.path.isfile(os.path.join(run_dir, k8s.MANIFEST_NAME)) else None


def resume_lock(manager, run_dir: str, attempt: int) -> dict:
    """The lock data for resuming a scheduler-launched run as attempt `attempt` (its job id not known until the
    submission)."""
    if scheduler_of(run_dir) == "k8s":
        name, namespace = k8s.job_of_manifest(os.path.join(run_dir, k8s.MANIFEST_NAME))
        return _lock_data(manager, run_dir, attempt, {"kind": "k8s", "job_id": name, "namespace": namespace})
    return _lock_data(manager, run_dir, attempt, {"kind": "slurm", "job_id": None})


def resubmit(manager, run_dir: str, attempt: int) -> str:
    """With the lock of `attempt` already taken (resume_lock): point the run's batch script or
    manifest at that attempt and submit it again; the trainers resume from the newest
    checkpoint, as under the local supervisor. Returns the job id."""
    import re

    mine = lambda d: lockfile.names(d, run_dir, attempt)  # noqa: E731
    if scheduler_of(run_dir) == "k8s":
        path = os.path.join(run_dir, k8s.MANIFEST_NAME)
        try:
            k8s.set_attempt(path, attempt)
            name, namespace = k8s.job_of_manifest(path)
        except (RunError, OSError, ValueError) as e:
            lockfile.clear_lock_if(manager.workspace, mine)
            raise RunError(str(e)) from None

        def reapply() -> str:  # the ended attempt's Job may still be there, and a Job's pods are immutable
            kubectl.delete(path, namespace, FORCE_GRACE_S, CANCEL_WAIT_S)
            return _apply(path, namespace, name)

        _submit(manager.workspace, run_dir, attempt, {"kind": "k8s", "job_id": name, "namespace": namespace},
                reapply)
        contract.append_status(run_dir, "STARTING", f"resume applied to Kubernetes: Job {name}, attempt {attempt}")
        return name
    path = os.path.join(run_dir, slurm.SCRIPT_NAME)
    text = open(path, encoding="utf-8").read()
    text, n = re.subn(r"(--attempt )\d+", lambda m: f"{m.group(1)}{attempt}", text)
    if n != 1:
        lockfile.clear_lock_if(manager.workspace, mine)
        raise RunError(f"{path} is not the batch script `gemma-ft launch --slurm` wrote (no single --attempt); "
                       "launch the run again")
    contract.atomic_write_text(path, text, mode=0o755)
    job_id = _submit(manager.workspace, run_dir, attempt, {"kind": "slurm", "job_id": None},
                     lambda: slurm.submit(path))
    contract.append_status(run_dir, "STARTING", f"resume submitted to Slurm as job {job_id}")
    return job_id


def stop_job(workspace: str, data: dict[str, Any], force: bool, timeout: float) -> StopReport:
    """Stop a scheduled run through its scheduler, returning once the job ended.
    - Slurm: the trainers get SIGINT (`scancel --signal=INT`: a graceful stop, one checkpoint);
      a job that has not ended after `timeout` s, or `force`, is cancelled (`scancel`).
    - Kubernetes: `kubectl delete -f` the manifest: the kubelet sends each pod's trainer
      SIGTERM (it saves one checkpoint and exits), SIGKILL after `timeout` s (`force`: a few)."""
    run_dir, attempt = data["run_dir"], data.get("attempt")
    job = job_of(data)
    name = f"{NAMES.get(job['kind'], job['kind'])} job {job['job_id']}"
    t0 = time.monotonic()
    report = StopReport(run_dir=run_dir)
    if job["job_id"] is None:
        report.nothing_to_stop, report.message = True, "nothing to stop: the run was not submitted yet"
        return report
    contract.atomic_write_json(os.path.join(run_dir, contract.STOP_REQUEST_NAME), {
        "requested_at": contract.utc_now(), "force": force, "by_pid": os.getpid(), "attempt": attempt})
    how = "deleting" if job["kind"] == "k8s" else "cancelling"
    contract.append_status(run_dir, "STOPPING", f"{'forced ' if force else ''}stop requested: {how} {name}")
    try:
        if job["kind"] == "k8s":
            path = os.path.join(run_dir, k8s.MANIFEST_NAME)
            kubectl.delete(path, (data.get("scheduler") or {}).get("namespace") or "default",
                           FORCE_GRACE_S if force else timeout, max(timeout, FORCE_GRACE_S) + CANCEL_WAIT_S)
            report.sent.append(f"kubectl delete -f {path} (SIGTERM to each pod, SIGKILL after "
                               f"{FORCE_GRACE_S if force else timeout:.0f} s)")
        else:
            _cancel_slurm(data, job, force, timeout, report)
    except SCHEDULER_ERRORS as e:
        raise RunError(f"cannot stop {name}: {e}") from None
    # The job supervisor writes the result and clears the lock; a job cancelled while pending
    # (or killed before it could), and any Kubernetes Job, leave both to us.
    _wait(lambda: job_of(data)["active"] is False, CANCEL_WAIT_S)
    record_end(run_dir, data, job, stopped=True)
    lockfile.clear_lock_if(workspace, lambda d: lockfile.names(d, run_dir, attempt))
    report.group_gone = job_of(data)["active"] is False
    report.seconds = round(time.monotonic() - t0, 3)
    return report


def _cancel_slurm(data: dict[str, Any], job: dict[str, Any], force: bool, timeout: float, report: StopReport) -> None:
    job_id, run_dir, attempt = job["job_id"], data["run_dir"], data.get("attempt")
    done = False
    if not force and job["state"] == "RUNNING":
        slurm.cancel(job_id, "INT")
        report.sent.append(f"SIGINT to the tasks of Slurm job {job_id} (scancel --signal=INT)")
        done = _wait(lambda: job_of(data)["active"] is False or _has_result(run_dir, attempt), timeout)
    if not done:
        slurm.cancel(job_id)
        report.sent.append(f"scancel {job_id}")
        _wait(lambda: job_of(data)["active"] is False, CANCEL_WAIT_S)


def record_end(run_dir: str, data: dict[str, Any], job: dict[str, Any], stopped: bool | None = None) -> None:
    """Write result.json for a scheduled attempt that ended without one: from the trainers'
    `final` event when they wrote one, else from the job's end (`job`: job_of, before it went).
    `stopped` None: whether a stop was requested."""
    attempt = data.get("attempt")
    if _has_result(run_dir, attempt):
        return
    stopped = stop_requested(run_dir, attempt) if stopped is None else stopped
    name = f"{NAMES.get(job.get('kind'), job.get('kind'))} job {job.get('job_id')}"
    ended = (f"{name} was deleted (kubectl delete)" if job.get("kind") == "k8s" else
             f"{name} was cancelled (scancel)") if stopped else f"{name} ended {job.get('state') or 'and is gone'}"
    summary = MetricsSummary(run_dir).refresh()
    final = summary.last_final if (summary.last_start or {}).get("attempt") == attempt else None
    if final and final.get("state") in ("FINISHED", "ABORTED"):
        state = final["state"]
        reason = f"{ended}; the trainers reported {state} at step {final.get('step')}" + (
            " after saving a checkpoint" if state == "ABORTED" and final.get("checkpoint") else "")
    elif stopped:
        state, reason = "ABORTED", f"{ended} before it wrote a result"
    else:
        state, reason = "FAILED", f"{ended} without the trainers reporting an end (see their stderr logs)"
    write_result(run_dir, attempt, None, data.get("started_at"), stopped=stopped,
                 override={"state": state, "reason": reason})


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
