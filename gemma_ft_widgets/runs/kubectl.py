"""Kubernetes, through kubectl: apply a run's manifest, ask about its Job, delete it.

What runs/slurm.py's sbatch / scontrol / scancel are for a Slurm run. kubectl uses the user's
own kubeconfig and context; nothing here signals a process: a delete lets the kubelet send
SIGTERM to each pod's trainer (which saves one checkpoint and exits), SIGKILL after the grace
period.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

COMMAND_TIMEOUT_S = 30.0
# Job states (job_state) in which the Job still has, or waits for, its pods.
ACTIVE = frozenset({"PENDING", "RUNNING", "SUSPENDED", "ENDING"})


class KubectlError(RuntimeError):
    """kubectl failed, is not installed here, or did not answer."""


def _run(args: list[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise KubectlError("kubectl is not installed here (or not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise KubectlError(f"kubectl {args[0]} did not answer within {timeout:.0f} s") from None


def _check(done: subprocess.CompletedProcess, args: list[str]) -> str:
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise KubectlError(f"kubectl {shlex.join(args)} failed: {why}")
    return done.stdout


def apply(path: str, namespace: str) -> None:
    """Create the manifest's Service and Job."""
    args = ["apply", "-f", path, "-n", namespace]
    _check(_run(args), args)


def delete(path: str, namespace: str, grace_s: float, timeout: float) -> None:
    """Delete the manifest's objects and wait until the Job's pods are gone (foreground
    cascade): the kubelet sends each pod's processes SIGTERM, SIGKILL after `grace_s` s."""
    args = ["delete", "-f", path, "-n", namespace, "--ignore-not-found", "--cascade=foreground", "--wait",
            f"--grace-period={max(1, round(grace_s))}", f"--timeout={max(1, round(timeout))}s"]
    _check(_run(args, timeout=timeout + COMMAND_TIMEOUT_S), args)


def job_state(name: str, namespace: str) -> str | None:
    """The Job's state (job_status_state), None when the cluster has no such Job (deleted, or
    removed after its ttlSecondsAfterFinished). Raises KubectlError when it cannot be asked."""
    args = ["get", "job", name, "-n", namespace, "-o", "json"]
    done = _run(args)
    if done.returncode != 0 and "(NotFound)" in done.stderr:
        return None
    try:
        job = json.loads(_check(done, args))
    except ValueError:
        raise KubectlError(f"kubectl {shlex.join(args)} printed no JSON") from None
    return job_status_state(job.get("status") or {})


def job_status_state(status: dict[str, Any]) -> str:
    """A Job's .status as one word (ACTIVE or not), a failure's reason after it:
    COMPLETE, "FAILED (BackoffLimitExceeded: ...)", ENDING (a terminal condition is set but
    pods still terminate), SUSPENDED, RUNNING (a pod is ready), PENDING (none is yet)."""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return "COMPLETE"
    if "Failed" in conditions:
        c = conditions["Failed"]
        return f"FAILED ({c.get('reason') or 'no reason given'}: {c.get('message') or ''})".replace(": )", ")")
    if "FailureTarget" in conditions or "SuccessCriteriaMet" in conditions:
        return "ENDING"
    if "Suspended" in conditions:
        return "SUSPENDED"
    # `ready` (pods whose containers run) is there since Kubernetes 1.24; before, `active`.
    running = status.get("ready") if "ready" in status else status.get("active")
    return "RUNNING" if running else "PENDING"
