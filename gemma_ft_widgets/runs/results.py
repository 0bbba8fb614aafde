"""result.json: how a trainer's exit status becomes a final state, and writing it once.

Used by the supervisor when its trainer exits, and by `stop` when a group kill also took the
supervisor (then nobody else is left to write it).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from .. import contract
from . import identity
from .metrics import MetricsSummary

OOM_REASON = "killed by SIGKILL, likely out of memory (OOM killer)"


def classify(returncode: int, stop_requested: bool, stderr_tail: str = "") -> dict[str, Any]:
    """state / exit_code / signal / reason for a trainer's exit status (Popen.returncode)."""
    last = stderr_tail.strip().splitlines()[-1].strip() if stderr_tail.strip() else ""
    if returncode >= 0:
        out = {"exit_code": returncode, "signal": None, "signal_name": None}
        if returncode == 0:
            return {**out, "state": "FINISHED", "reason": "finished"}
        if returncode == contract.EXIT_ABORTED:
            return {**out, "state": "ABORTED", "reason": "stopped on request after saving a checkpoint"}
        if returncode == contract.EXIT_CONFIG_ERROR:
            detail = stderr_tail.strip()[-2000:]
            return {**out, "state": "FAILED", "reason": "invalid config or data" + (f": {detail}" if detail else "")}
        return {**out, "state": "FAILED",
                "reason": f"trainer exited with code {returncode}" + (f": {last}" if last else "")}
    signum = -returncode
    name = identity.signal_name(signum)
    out = {"exit_code": None, "signal": signum, "signal_name": name}
    if stop_requested:
        return {**out, "state": "ABORTED", "reason": f"stopped on request: trainer killed by {name}"}
    if signum == signal.SIGKILL:
        return {**out, "state": "FAILED", "reason": OOM_REASON}
    return {**out, "state": "FAILED", "reason": f"killed by {name}"}



def write_result(run_dir: str, attempt: int, returncode: int | None, started_at: str | None,
                 stopped: bool, trainer_pid: int | None = None,
                 override: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write result.json atomically and log the final state to status.log."""
    if returncode is None:
        outcome = {"state": "ABORTED", "exit_code": None, "signal": None, "signal_name": None,
                   "reason": "stopped before the trainer started"}
    else:
        tail = contract.tail_text(os.path.join(run_dir, contract.STDERR_NAME), max_lines=20)
        outcome = classify(returncode, stopped, tail)
    outcome.update(override or {})
    summary = MetricsSummary(run_dir).refresh()
    steps = contract.checkpoint_steps(run_dir)
    result = {
        **outcome,
        "final_step": summary.value("step", "step") if summary.last_step else None,
        "last_checkpoint": f"{contract.CHECKPOINTS_DIR}/{contract.CHECKPOINT_PREFIX}{steps[-1]}" if steps else None,
        "started_at": started_at,
        "ended_at": contract.utc_now(),
        "attempt": attempt,
        "trainer_pid": trainer_pid,
    }
    contract.atomic_write_json(os.path.join(run_dir, contract.RESULT_NAME), result)
    contract.append_status(run_dir, result["state"], result["reason"].splitlines()[0] if result["reason"] else "")
    return result
