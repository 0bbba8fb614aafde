"""What a scheduler says of a run's job (the workspace lock's "scheduler": kind, job id, and
for Kubernetes the namespace).

Read by status for a run launched through a scheduler (runs/scheduled.py), in place of the
pid checks of a local run.
"""

from __future__ import annotations

from typing import Any

from . import kubectl, slurm


def job_of(lock: dict[str, Any]) -> dict[str, Any]:
    """{"kind", "job_id", "state", "active", "error"} of the lock's job; active None when the
    scheduler cannot be asked (never taken as proof that the job ended)."""
    sched = lock.get("scheduler") or {}
    kind, job_id = sched.get("kind"), sched.get("job_id")
    out = {"kind": kind, "job_id": job_id, "state": None, "active": None, "error": None}
    if job_id is None:
        return out
    try:
        if kind == "slurm":
            state, active = slurm.job_state(str(job_id)), slurm.ACTIVE
        elif kind == "k8s":
            state, active = kubectl.job_state(str(job_id), str(sched.get("namespace") or "default")), kubectl.ACTIVE
        else:
            out["error"] = f"unknown scheduler {kind!r}"
            return out
    except (slurm.SlurmError, kubectl.KubectlError) as e:
        out["error"] = str(e)
        return out
    out["state"], out["active"] = state, state is not None and state.split()[0] in active
    return out
