"""What a scheduler says of a run's job (the workspace lock's "scheduler": kind, job id).

Read by status for a run launched through a scheduler (runs/scheduled.py), in place of the
pid checks of a local run.
"""

from __future__ import annotations

from typing import Any

from . import slurm


def job_of(lock: dict[str, Any]) -> dict[str, Any]:
    """{"kind", "job_id", "state", "active", "error"} of the lock's job; active None when the
    scheduler cannot be asked (never taken as proof that the job ended)."""
    sched = lock.get("scheduler") or {}
    job_id = sched.get("job_id")
    out = {"kind": sched.get("kind"), "job_id": job_id, "state": None, "active": None, "error": None}
    if job_id is None:
        return out
    if sched.get("kind") != "slurm":
        out["error"] = f"unknown scheduler {sched.get('kind')!r}"
        return out
    try:
        state = slurm.job_state(str(job_id))
    except slurm.SlurmError as e:
        out["error"] = str(e)
        return out
    out["state"], out["active"] = state, state is not None and state.split()[0] in slurm.ACTIVE
    return out
