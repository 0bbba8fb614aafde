"""Run states and their derivation: a pure function of facts already read from disk and the
process table (see the state table in docs/ARCHITECTURE.md).

Keeping the I/O out of here is what lets a table of plain values test every case, and lets any
process (a new kernel, a terminal) compute the same answer from the same workspace.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any


class State(str, Enum):
    """The state of a run, as docs/ARCHITECTURE.md's state table derives it."""

    IDLE = "IDLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    ORPHANED = "ORPHANED"

    def __str__(self) -> str:
        return self.value


LOCK_MISSING = ("its workspace lock is missing (deleted while the run goes on); restoring it puts it "
                "back, and stop, start, resume and delete see the run anyway")
SCHEDULER_NAMES = {"slurm": "Slurm", "k8s": "Kubernetes"}  # the lock's scheduler kinds, for messages
ACTIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
ENDED_STATES = frozenset({State.FINISHED, State.FAILED, State.ABORTED})


class Proc(str, Enum):
    """What the process table says about one pid recorded in the lock."""

    ALIVE = "alive"  # running, and pid + create time + cmdline match the lock
    GONE = "gone"  # no such process (or a zombie waiting to be reaped)
    REUSED = "reused"  # the pid exists but belongs to another program
    NONE = "none"  # no pid recorded (yet)


@dataclasses.dataclass(frozen=True)
class Facts:
    """Everything derive_state needs about one run, read beforehand."""

    has_run: bool = True  # False: the workspace has no run at all
    lock: dict[str, Any] | None = None  # the parsed lock, when it names this run
    lock_error: str | None = None  # the lock exists but cannot be read
    host: str = ""  # this machine's hostname
    boot_id: str = ""  # this machine's boot id
    supervisor: Proc = Proc.NONE
    trainer: Proc = Proc.NONE
    launcher: Proc = Proc.NONE  # the process that created the lock, before the supervisor runs
    pids: dict[str, Any] = dataclasses.field(default_factory=dict)  # role -> pid, for reasons
    stop_requested: bool = False  # stop_request.json for the lock's attempt
    stepped: bool = False  # a step event after the latest start event
    result: dict[str, Any] | None = None  # parsed and valid result.json
    result_error: str | None = None  # result.json exists but is unreadable / invalid
    final: dict[str, Any] | None = None  # the trainer's `final` event after its latest `start`
    lock_missing: bool = False  # no lock names this run, yet its processes hold the run's flock
    # A run launched through a scheduler: {"kind", "job_id", "state", "active", "error"}
    # (active None: the scheduler could not be asked).
    job: dict[str, Any] | None = None
    # Processes 1.. of a multi-process run still alive (process -> pid): the run is not over
    # while any of them lives, even with its supervisor and process 0 gone.
    live_peers: dict[int, Any] = dataclasses.field(default_factory=dict)
    # No lock, no result: the batch script or manifest `gemma-ft launch` wrote into the folder.
    prepared: str | None = None


def derive_state(f: Facts) -> tuple[State, str]:
    """(state, human-readable reason) for one run. Never raises on odd input."""
    if not f.has_run:
        return State.IDLE, "no runs in this workspace"
    if f.lock_error is not None:
        return State.ORPHANED, f"lock file unreadable ({f.lock_error})"
    if f.lock is not None:
        return _with_lock(f)
    if f.lock_missing:
        state = State.STOPPING if f.stop_requested else (State.RUNNING if f.stepped else State.STARTING)
        return state, LOCK_MISSING
    if f.result is not None:
        return _from_result(f.result)
    if f.result_error is not None:
        return State.FAILED, f"result file unreadable ({f.result_error})"
    if f.prepared and (not f.stepped or f.prepared.endswith(".json")):
        return _launched_elsewhere(f)
    if _final_state(f) is not None:
        return _from_final(f)
    return State.ORPHANED, "no result and no lock (the run was interrupted or its lock was cleaned)"


def _with_lock(f: Facts) -> tuple[State, str]:
    lock = f.lock or {}
    same_attempt_result = f.result is not None and f.result.get("attempt") == lock.get("attempt")
    if lock.get("scheduler"):
        return _from_result(f.result) if same_attempt_result else _scheduled(f)
    host = lock.get("hostname")
    if host != f.host:
        if same_attempt_result:  # the run ended over there; only its lock is left
            return _from_result(f.result)
        state = State.STOPPING if f.stop_requested else (State.RUNNING if f.stepped else State.STARTING)
        return state, f"active on host {host}; cannot be verified or stopped from here"
    if lock.get("boot_id") != f.boot_id:
        return State.ORPHANED, "machine rebooted since the run started (lock from another boot)"
    alive = Proc.ALIVE in (f.supervisor, f.trainer)
    if same_attempt_result:
        # The supervisor wrote result.json and is about to remove the lock, or died doing so.
        return _from_result(f.result)
    if alive:
        if f.stop_requested:
            return State.STOPPING, "stop requested; waiting for the trainer to save and exit"
        if f.stepped:
            if f.supervisor in (Proc.GONE, Proc.REUSED) and f.trainer == Proc.ALIVE:
                return State.RUNNING, (f"the supervisor (pid {f.pids.get('supervisor')}) is gone; training goes "
                                       "on and its outcome will be read from the trainer's metrics")
            return State.RUNNING, ""
        if f.trainer == Proc.ALIVE:
            return State.STARTING, "trainer is loading the model and data"
        return State.STARTING, "supervisor is starting the trainer"
    if f.supervisor == Proc.NONE and f.launcher == Proc.ALIVE:
        return State.STARTING, "launching the supervisor"
    if f.live_peers:  # never resumable beside them: they hold the run's devices and files
        peers = ", ".join(f"process {k} (pid {pid})" for k, pid in sorted(f.live_peers.items()))
        one = len(f.live_peers) == 1
        gone = _why_dead(f).split(": ", 1)[-1]
        return State.ORPHANED, (f"{gone}; but {peers} still {'runs' if one else 'run'} (likely waiting in a "
                                f"collective for the others): stop {'it' if one else 'them'} "
                                "before a resume")
    if _final_state(f) is not None:  # the trainer ended on its own, but nobody wrote result.json
        return _from_final(f)
    return State.ORPHANED, _why_dead(f)


def _scheduled(f: Facts) -> tuple[State, str]:
    """A run whose trainers a scheduler runs: the job's state, not pids, says whether it lives."""
    job = f.job or {}
    k8s = job.get("kind") == "k8s"
    kind = SCHEDULER_NAMES.get(job.get("kind"), str(job.get("kind") or "scheduler").capitalize())
    name = f"{kind} job {job.get('job_id')}"
    if job.get("job_id") is None:
        if f.launcher == Proc.ALIVE:
            return State.STARTING, f"submitting to {kind}"
        return State.ORPHANED, f"the submission to {kind} did not complete (no job id was recorded)"
    state = job.get("state")
    if job.get("active") is False:  # the job ended without writing result.json (a Kubernetes Job never does)
        if f.launcher == Proc.ALIVE:  # a Kubernetes Job is recorded before `kubectl apply` creates it
            return State.STARTING, f"submitting to {kind}"
        final = _final_state(f)
        if final is not None and k8s:
            return final, (f"the trainers reported {final.value} at step {(f.final or {}).get('step')}; "
                           f"{name} " + (f"ended {state}" if state else "is gone"))
        if final is not None:
            return _from_final(f)
        if state is None and not f.stop_requested:
            return State.ORPHANED, f"{name} is no longer known to {kind} and left no result"
        if f.stop_requested or state.startswith("CANCELLED"):
            how = "deleted (kubectl delete)" if k8s else f"cancelled ({state})"
            return State.ABORTED, f"{name} was {how} before it wrote a result"
        return State.FAILED, f"{name} ended {state}" + (": a trainer failed (see its stderr log)" if k8s
                                                        else " without writing a result")
    unknown = f"; cannot ask {kind}: {job.get('error')}" if job.get("active") is None else ""
    if f.stop_requested:
        return State.STOPPING, f"stop requested; {name} is being {'deleted' if k8s else 'cancelled'}{unknown}"
    if state == "PENDING":
        return State.STARTING, f"{name} is queued (PENDING)"
    if f.stepped:
        return State.RUNNING, f"{name} ({state or 'state unknown'}){unknown}"
    return State.STARTING, f"{name} ({state or 'state unknown'}): the trainers are starting{unknown}"


def _launched_elsewhere(f: Facts) -> tuple[State, str]:
    """A run written by `gemma-ft launch` for a scheduler that nobody here holds a lock for: a
    Slurm script not submitted yet, or a Kubernetes manifest (its pods write only the folder)."""
    path = str(f.prepared)
    how = f"kubectl apply -f {path}" if path.endswith(".json") else f"sbatch {path}"
    final = _final_state(f)
    if final is not None:
        return final, f"the trainers reported {final.value} at step {(f.final or {}).get('step')}"
    if f.stepped:
        return State.RUNNING, (f"launched with `{how}`: its state is read from the run folder only "
                               "(a run that stalls may have ended; `kubectl delete -f` stops it)")
    return State.IDLE, f"written, not started: {how}"


def _final_state(f: Facts) -> State | None:
    state = (f.final or {}).get("state")
    return State(state) if state in (State.FINISHED.value, State.ABORTED.value) else None


def _from_final(f: Facts) -> tuple[State, str]:
    """A trainer writes `final` only after its last checkpoint: its word is as good as a result
    (e.g. its supervisor was SIGKILLed, so nobody recorded the exit)."""
    state = _final_state(f)
    step = (f.final or {}).get("step")
    return state, (f"the trainer reported {state.value} at step {step}, but its supervisor died before "
                   "writing result.json")


def _why_dead(f: Facts) -> str:
    parts = []
    for role in ("supervisor", "trainer"):
        check = getattr(f, role)
        pid = f.pids.get(role)
        if check == Proc.REUSED:
            parts.append(f"{role} pid {pid} now belongs to another program")
        elif check == Proc.GONE:
            parts.append(f"{role} (pid {pid}) is gone")
    if f.supervisor == Proc.NONE:
        parts.append("the process that started the run exited before launching the supervisor")
    detail = "; ".join(parts) if parts else "no process of the run is alive"
    return f"the run's processes ended without writing a result: {detail}"


def _from_result(result: dict[str, Any]) -> tuple[State, str]:
    return State(result["state"]), str(result.get("reason") or "")


def valid_result(obj: Any) -> str | None:
    """Why a parsed result.json cannot be used, or None when it can."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("state") not in {s.value for s in ENDED_STATES}:
        return f"invalid state {obj.get('state')!r}"
    return None
