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


# Resource exhaustion the user must recognise at once, whatever library reported it.
KNOWN_CAUSES = (
    (("No space left on device", "[Errno 28]", "os_error_code='28'", "Disk quota exceeded"), "out of disk space"),
    (("Out of memory while trying to allocate", "RESOURCE_EXHAUSTED: Out of memory", "CUDA_ERROR_OUT_OF_MEMORY"),
     "accelerator out of memory"),
    (("MemoryError",), "out of host memory"),
)


def error_line(stderr_tail: str) -> str:
    """The line that says what went wrong: the exception closing the last traceback (threads
    may print more after it, e.g. "Event loop is closed" at shutdown), else the last line."""
    lines = stderr_tail.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last):"):
            for line in lines[i + 1:]:
                if line.strip() and not line.startswith((" ", "\t")):
                    return line.strip()
            break
    return lines[-1].strip() if lines else ""


def known_cause(stderr_tail: str) -> str | None:
    """The plain cause ("out of disk space", ...) of the first KNOWN_CAUSES pattern in the stderr tail, else None."""
    for needles, cause in KNOWN_CAUSES:
        if any(n in stderr_tail for n in needles):
            return cause
    return None


def classify(returncode: int, stop_requested: bool, stderr_tail: str = "") -> dict[str, Any]:
    """state / exit_code / signal / reason for a trainer's exit status (Popen.returncode)."""
    last = error_line(stderr_tail)
    if returncode >= 0:
        out = {"exit_code": returncode, "signal": None, "signal_name": None}
        if returncode == 0:
            return {**out, "state": "FINISHED", "reason": "finished"}
        if returncode == contract.EXIT_ABORTED:
            return {**out, "state": "ABORTED", "reason": "stopped on request after saving a checkpoint"}
        if returncode == contract.EXIT_CONFIG_ERROR:
            detail = stderr_tail.strip()[-2000:]
            return {**out, "state": "FAILED", "reason": "invalid config or data" + (f": {detail}" if detail else "")}
        if returncode == contract.EXIT_NO_ACCELERATOR:
            return {**out, "state": "FAILED", "reason": last.removeprefix("error: ") or "jax sees no accelerator"}
        if stop_requested and last.startswith("KeyboardInterrupt"):  # SIGINT before its handler was set
            return {**out, "state": "ABORTED", "reason": "stopped on request while starting"}
        if returncode == contract.EXIT_FOLDER_GONE:
            return {**out, "state": "FAILED", "reason": last.removeprefix("error: ") or "the run folder is gone"}
        if returncode == contract.EXIT_DIVERGED:  # "error: loss became NaN at step N; ..."
            return {**out, "state": "FAILED", "reason": last.removeprefix("error: ") or "training diverged"}
        cause = known_cause(stderr_tail)
        return {**out, "state": "FAILED", "reason": (f"{cause}; " if cause else "")
                + f"trainer exited with code {returncode}" + (f": {last}" if last else "")}
    signum = -returncode
    name = identity.signal_name(signum)
    out = {"exit_code": None, "signal": signum, "signal_name": name}
    if stop_requested:
        return {**out, "state": "ABORTED", "reason": f"stopped on request: trainer killed by {name}"}
    if signum == signal.SIGKILL:
        return {**out, "state": "FAILED", "reason": OOM_REASON}
    return {**out, "state": "FAILED", "reason": f"killed by {name}"}



def stderr_tail(run_dir: str, since: int = 0, max_bytes: int = 64 * 1024, process: int = 0) -> str:
    """The end of trainer_stderr.log (process k > 0: trainer_stderr.p<k>.log), from byte
    `since` on (the log is appended across attempts: an earlier attempt's error must not
    explain this one's)."""
    try:
        with open(os.path.join(run_dir, contract.process_log_name(contract.STDERR_NAME, process)), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(since, size - max_bytes, 0)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if start > since:  # the first line is probably cut
        text = text.split("\n", 1)[-1]
    return text


def _aborted_reason(summary: MetricsSummary, steps: list[int]) -> str:
    """A stop says what was saved: nothing when it came before the first step or checkpoint."""
    final = summary.last_final or {}
    last = contract.checkpoint_rel(steps[-1]) if steps else None
    if not summary.stepped:
        return ("stopped on request while starting, before any step; "
                + (f"the last checkpoint is {last}" if last else "no checkpoint was saved"))
    if not final.get("checkpoint") and not last:
        return "stopped on request before any checkpoint was saved"
    return "stopped on request after saving a checkpoint"


def write_result(run_dir: str, attempt: int, returncode: int | None, started_at: str | None,
                 stopped: bool, trainer_pid: int | None = None,
                 override: dict[str, Any] | None = None, stderr_offset: int = 0,
                 process: tuple[int, int] | None = None, processes: list[dict] | None = None) -> dict[str, Any]:
    """Write result.json atomically and log the final state to status.log. `stderr_offset`:
    the size of trainer_stderr.log when this attempt's trainer started. A multi-process run:
    `process` = (k, n), the process whose `returncode` this is (the first that failed, else 0),
    named in a failure's reason; `processes`: how each process ended."""
    k, n = process or (0, 1)
    if returncode is None:
        outcome = {"state": "ABORTED", "exit_code": None, "signal": None, "signal_name": None,
                   "reason": "stopped before the trainer started"}
    else:
        outcome = classify(returncode, stopped, stderr_tail(run_dir, stderr_offset, process=k))
        if n > 1 and outcome["state"] == "FAILED":  # "process 1 of 2 killed by SIGKILL, ..."
            reason = outcome["reason"]
            outcome["reason"] = f"process {k} of {n}" + (f" {reason}" if reason.startswith("killed by")
                                                         else f": {reason}")
    outcome.update(override or {})
    summary = MetricsSummary(run_dir).refresh()
    steps = contract.checkpoint_steps(run_dir)
    if outcome["state"] == "ABORTED" and returncode in (contract.EXIT_ABORTED, contract.EXIT_FAILED,
                                                                 -signal.SIGINT) and not override:
        outcome["reason"] = _aborted_reason(summary, steps)
    result = {
        **outcome,
        "final_step": summary.value("step", "step") if summary.last_step else None,
        "last_checkpoint": contract.checkpoint_rel(steps[-1]) if steps else None,
        "started_at": started_at,
        "ended_at": contract.utc_now(),
        "attempt": attempt,
        "trainer_pid": trainer_pid,
        "stderr_offset": stderr_offset,
        **({"process": k, "processes": processes} if processes else {}),
    }
    contract.atomic_write_json(os.path.join(run_dir, contract.RESULT_NAME), result)
    contract.append_status(run_dir, result["state"], result["reason"].splitlines()[0] if result["reason"] else "")
    return result
