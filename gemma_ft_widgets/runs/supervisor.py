"""The detached supervisor: `python -m gemma_ft_widgets.runs.supervisor RUN_DIR --workspace WS
--trainer MODULE --attempt K`.

Started by RunManager in a new session (so it leads its own process group and no kernel
restart or terminal hangup reaches it). It records itself in the lock, starts the trainer as
its child in the same group, forwards SIGTERM, waits, writes result.json atomically and
removes the lock if the lock still names it. It ignores SIGINT: a graceful stop goes to the
trainer, which saves a checkpoint; the supervisor must live to report it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import psutil

from .. import contract
from . import identity, launch, liveness, lockfile
from .results import write_result
from .status import read_config, stop_requested

POLL_S = 0.05  # how often the trainers of a multi-process run are polled
PEER_GRACE_S = 3.0  # after one process failed, its peers may end on their own this long
CLEAN_PEER_WAIT_S = 60.0  # after one process ended cleanly, the others follow within this


def _log(msg: str) -> None:
    print(f"{contract.utc_now()} supervisor[{os.getpid()}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one attempt: claim the lock, start the trainer(s), wait, write result.json."""
    args = launch.supervisor_arguments("gemma_ft_widgets.runs.supervisor").parse_args(argv)
    run_dir, ws, attempt = os.path.abspath(args.run_dir), os.path.abspath(args.workspace), args.attempt

    term = _TermForwarder()
    # A Python handler, not SIG_IGN: handlers reset to default on exec, so the trainer still
    # gets SIGINT's default behaviour (SIG_IGN would be inherited).
    signal.signal(signal.SIGINT, lambda s, f: _log("SIGINT ignored (the trainer handles stops)"))
    signal.signal(signal.SIGTERM, term)

    if not _claim_lock(ws, run_dir, attempt):
        _log("the lock no longer names this run and attempt; not starting the trainer")
        contract.append_status(run_dir, "ORPHANED", "supervisor found no lock for this attempt; trainer not started")
        return 1
    # Held until the trainer exits, by both of us: the run is found alive from its folder even
    # if the workspace lock is deleted (runs/liveness.py).
    run_flock = liveness.hold(run_dir)
    folder_id = contract.folder_identity(run_dir)
    lock = lockfile.read_lock(ws).data or {}
    started_at = lock.get("started_at") or contract.utc_now()
    outcome = _Outcome(stderr_offsets=[0] * _num_processes(run_dir))
    if term.requested:
        _log("stop requested before the trainer started")
    else:
        try:
            _run_trainers(args.trainer, run_dir, ws, attempt, run_flock, term, outcome)
        except _CannotStart as e:
            return _cannot_start(run_dir, ws, attempt, started_at, run_flock, str(e))
    os.close(run_flock)  # released once the trainer (and any child it passed it to) is gone too
    return _report(run_dir, ws, attempt, args.trainer, folder_id, started_at, term, outcome)


class _TermForwarder:
    """The SIGTERM handler: forwards it to the trainers; they checkpoint and exit ABORTED."""

    def __init__(self) -> None:
        self.requested = False
        self.trainers: list[subprocess.Popen] = []  # process k of a multi-process run is trainers[k]

    def __call__(self, signum, frame) -> None:
        self.requested = True
        for trainer in self.trainers:
            if trainer.returncode is None:
                trainer.send_signal(signal.SIGTERM)  # our unreaped child: its pid cannot be reused


@dataclasses.dataclass
class _Outcome:
    """What the attempt's trainers did: the process whose exit decides the result, its status,
    each trainer's identity and where its stderr of this attempt starts."""

    stderr_offsets: list[int]
    decider: int = 0
    returncode: int | None = None
    described: list[dict] = dataclasses.field(default_factory=list)  # process, pid, create time, cmdline


class _CannotStart(Exception):
    """The trainers could not be started; the message is the result's reason."""


def _mine(run_dir: str, attempt: int):
    """The lock names this run and attempt, and no other supervisor."""
    return lambda d: lockfile.names(d, run_dir, attempt) and d.get("supervisor_pid") in (None, os.getpid())


def _mine_to_clear(run_dir: str, attempt: int):
    """The lock names this run and attempt, and this supervisor."""
    return lambda d: lockfile.names(d, run_dir, attempt) and d.get("supervisor_pid") == os.getpid()


def _claim_lock(ws: str, run_dir: str, attempt: int) -> bool:
    """Record this supervisor in the lock; False when the lock no longer names this attempt."""
    me = identity.describe(os.getpid())
    return lockfile.update_lock(ws, _mine(run_dir, attempt), {
        "supervisor_pid": os.getpid(), "pgid": os.getpgid(0),
        "create_times": {str(os.getpid()): me["create_time"]}, "cmdline": me["cmdline"],
    })


def _run_trainers(module: str, run_dir: str, ws: str, attempt: int, run_flock: int,
                  term: _TermForwarder, outcome: _Outcome) -> None:
    """Start the trainer processes, name them in the lock and wait for them all."""
    n = len(outcome.stderr_offsets)
    cmd = [sys.executable, "-m", module, run_dir]
    try:
        coordinator = _coordinator(n)
        envs = [trainer_env(attempt, n, k, coordinator) for k in range(n)]
    except ValueError as e:
        raise _CannotStart(str(e)) from e
    try:
        for k in range(n):
            term.trainers.append(_start_trainer(cmd, run_dir, k, envs[k], run_flock, outcome))
    except OSError as e:
        _end_all(term.trainers)
        raise _CannotStart(f"cannot start the trainer: {e}") from e
    if term.requested:
        term(signal.SIGTERM, None)
    trainers = term.trainers
    # The children are unreaped until waited for, so their create times are readable even
    # if they exited. The lock names every process of the run.
    outcome.described = [{"process": k, "pid": t.pid, "create_time": psutil.Process(t.pid).create_time(),
                          "cmdline": cmd} for k, t in enumerate(trainers)]
    lockfile.update_lock(ws, _mine(run_dir, attempt), {
        "trainer_pid": trainers[0].pid, "trainer_cmdline": cmd, "trainers": outcome.described,
        "create_times": {str(d["pid"]): d["create_time"] for d in outcome.described},
    })
    pids = ", ".join(str(t.pid) for t in trainers)
    _log(f"trainer pid(s) {pids} started: {' '.join(cmd)}")
    contract.append_status(run_dir, "STARTING", f"attempt {attempt}: trainer pid {pids} started"
                           if n == 1 else f"attempt {attempt}: {n} trainer processes started (pids {pids})")
    outcome.decider, outcome.returncode = _wait_for_trainers(trainers)
    _log(f"trainer exited with status {outcome.returncode}" if n == 1 else
         f"trainers exited; process {outcome.decider}'s status {outcome.returncode} decides the result")


def _start_trainer(cmd: list[str], run_dir: str, k: int, env: dict[str, str], run_flock: int,
                   outcome: _Outcome) -> subprocess.Popen:
    """Process k, its output appended to its logs; notes where this attempt's stderr starts."""
    out_path, err_path = (os.path.join(run_dir, contract.process_log_name(name, k))
                          for name in (contract.STDOUT_NAME, contract.STDERR_NAME))
    try:  # this attempt's stderr starts here (the log is appended across attempts)
        outcome.stderr_offsets[k] = os.path.getsize(err_path)
    except OSError:
        outcome.stderr_offsets[k] = 0
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, pass_fds=(run_flock,))


def _report(run_dir: str, ws: str, attempt: int, module: str, folder_id, started_at: str,
            term: _TermForwarder, outcome: _Outcome) -> int:
    """Write result.json (where the folder is now), clear the lock, then what follows a run."""
    mine_to_clear = _mine_to_clear(run_dir, attempt)  # the lock names the folder where the run started
    if contract.folder_identity(run_dir) != folder_id:  # moved or deleted while the run went on
        moved = contract.where_now(1)  # our stdout is the run folder's supervisor.log
        if not moved or contract.folder_identity(moved) != folder_id:
            _log(f"the run folder {run_dir} was deleted while the run went on; no result to write")
            lockfile.clear_lock_if(ws, mine_to_clear)
            return 1
        _log(f"the run folder was moved to {moved}; its result goes there")
        run_dir = moved
    trainers, n = term.trainers, len(outcome.stderr_offsets)
    result = write_result(run_dir, attempt, outcome.returncode, started_at,
                          stopped=term.requested or stop_requested(run_dir, attempt),
                          trainer_pid=trainers[0].pid if trainers else None,
                          stderr_offset=outcome.stderr_offsets[outcome.decider],
                          process=(outcome.decider, n) if n > 1 else None,
                          processes=[_exit_of(d, t) for d, t in zip(outcome.described, trainers)] if n > 1 else None)
    lockfile.clear_lock_if(ws, mine_to_clear)
    _after_the_run(run_dir, ws, attempt, module, result["state"])
    _log("done")
    return 0


def _num_processes(run_dir: str) -> int:
    n = (read_config(run_dir) or {}).get("num_processes", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def _coordinator(n: int) -> str | None:
    """127.0.0.1 and a port free now, for process 0's coordination service (None for one process)."""
    if n == 1:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def trainer_env(attempt: int, n: int, k: int, coordinator: str | None,
                environ: dict[str, str] | None = None) -> dict[str, str]:
    """Process k of n's environment (also runs/job_task.py's, under a scheduler)."""
    environ = dict(os.environ) if environ is None else environ
    env = {**environ, contract.ATTEMPT_ENV: str(attempt)}
    for key in (contract.COORDINATOR_ENV, contract.NUM_PROCESSES_ENV, contract.PROCESS_ID_ENV,
                contract.DISTRIBUTED_ENV):
        env.pop(key, None)
    devices = environ.get(contract.CPU_DEVICES_ENV)
    if devices:
        if not devices.isdigit() or int(devices) < 1:
            raise ValueError(f"{contract.CPU_DEVICES_ENV} must be a positive integer, got {devices!r}")
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    if n > 1:
        env.update({contract.COORDINATOR_ENV: coordinator, contract.NUM_PROCESSES_ENV: str(n),
                    contract.PROCESS_ID_ENV: str(k)})
    return env


def _wait_for_trainers(trainers: list[subprocess.Popen]) -> tuple[int, int]:
    """Wait for every trainer; returns (k, status of process k), k the process that decides the
    run's result: the first to end badly, else process 0.

    A process that ends badly (an error, a signal) leaves its peers waiting in a collective that
    never completes: after PEER_GRACE_S they are killed (our own unreaped children), so no
    process outlives the run. One that ends cleanly (finished, stopped) is followed by the others
    within CLEAN_PEER_WAIT_S (they leave through the same barrier), else they are killed too."""
    if len(trainers) == 1:
        return 0, trainers[0].wait()
    n = len(trainers)
    codes: dict[int, int] = {}
    first_bad: int | None = None
    deadline: float | None = None
    while len(codes) < n:
        ended = [k for k, t in enumerate(trainers) if k not in codes and t.poll() is not None]
        # Of processes found ended together, one killed by a signal is the cause, not its peer
        # that failed in a collective because of it.
        for k in sorted(ended, key=lambda k: trainers[k].returncode >= 0):
            codes[k] = trainers[k].returncode
            _log(f"trainer process {k} of {n} (pid {trainers[k].pid}) exited with status {codes[k]}")
            if first_bad is None and codes[k] not in (0, contract.EXIT_ABORTED):
                first_bad = k
                deadline = time.monotonic() + PEER_GRACE_S
            elif deadline is None:
                deadline = time.monotonic() + CLEAN_PEER_WAIT_S
        if deadline is not None and time.monotonic() >= deadline and len(codes) < n:
            for trainer in trainers:
                if trainer.poll() is None:
                    _log(f"killing trainer pid {trainer.pid}: a peer process has ended")
                    trainer.send_signal(signal.SIGKILL)  # our own unreaped child
            for k, trainer in enumerate(trainers):
                codes.setdefault(k, trainer.wait())
            break
        time.sleep(POLL_S)
    decider = first_bad if first_bad is not None else 0
    return decider, codes[decider]


def _exit_of(described: dict, trainer: subprocess.Popen) -> dict:
    """How one process ended, with its identity (status checks that it is gone)."""
    code = trainer.returncode
    return {**described, "exit_code": code if code is not None and code >= 0 else None,
            "signal_name": identity.signal_name(-code) if code is not None and code < 0 else None}


def _end_all(trainers: list[subprocess.Popen]) -> None:
    """Some trainers started, then the next could not: the started ones go (our children)."""
    for trainer in trainers:
        if trainer.poll() is None:
            trainer.send_signal(signal.SIGKILL)
        trainer.wait()


def _cannot_start(run_dir: str, ws: str, attempt: int, started_at: str, run_flock: int, reason: str) -> int:
    os.close(run_flock)
    _log(reason)
    write_result(run_dir, attempt, None, started_at, stopped=False, override={"state": "FAILED", "reason": reason})
    lockfile.clear_lock_if(ws, _mine_to_clear(run_dir, attempt))
    return 1


def _after_the_run(run_dir: str, ws: str, attempt: int, trainer: str, state: str) -> None:
    """Start the next queued run, then send the webhook (from a process of its own). The
    result is already written: nothing here may change it, so every failure is only logged."""
    from . import notify, queue
    from .manager import RunManager

    try:
        started = queue.advance_after(RunManager(ws, trainer=trainer), os.path.basename(run_dir), state)
        if started is not None:
            _log(f"queue: started {started.name}")
    except Exception as e:  # noqa: BLE001 - any failure of the queue must leave this run's result alone
        _log(f"queue: could not start the next run: {type(e).__name__}: {e}")
    try:
        notify.spawn(run_dir, ws, attempt, read_config(run_dir))
    except OSError as e:
        _log(f"notify: could not start the notifier: {e}")


if __name__ == "__main__":
    sys.exit(main())
