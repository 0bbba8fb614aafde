"""The detached supervisor: `python -m gemma_ft_widgets.runs.supervisor RUN_DIR --workspace WS
--trainer MODULE --attempt K`.

Started by RunManager in a new session (so it leads its own process group and no kernel
restart or terminal hangup reaches it). It records itself in the lock, starts the trainer as
its child in the same group, forwards SIGTERM, waits, writes result.json atomically and
removes the lock if the lock still names it. It ignores SIGINT: a graceful stop goes to the
trainer, which saves a checkpoint; the supervisor must live to report it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import psutil

from .. import contract
from . import identity, liveness, lockfile
from .results import write_result
from .status import stop_requested

ATTEMPT_ENV = "GEMMA_FT_ATTEMPT"  # tells the trainer which attempt it is (1 + resumes)


def _log(msg: str) -> None:
    print(f"{contract.utc_now()} supervisor[{os.getpid()}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gemma_ft_widgets.runs.supervisor")
    parser.add_argument("run_dir")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    args = parser.parse_args(argv)
    run_dir, ws, attempt = os.path.abspath(args.run_dir), os.path.abspath(args.workspace), args.attempt

    trainer: subprocess.Popen | None = None
    term = {"requested": False}

    def on_term(signum, frame):  # forward; the trainer checkpoints and exits ABORTED
        term["requested"] = True
        if trainer is not None and trainer.returncode is None:
            trainer.send_signal(signal.SIGTERM)  # our unreaped child: its pid cannot be reused

    # A Python handler, not SIG_IGN: handlers reset to default on exec, so the trainer still
    # gets SIGINT's default behaviour (SIG_IGN would be inherited).
    signal.signal(signal.SIGINT, lambda s, f: _log("SIGINT ignored (the trainer handles stops)"))
    signal.signal(signal.SIGTERM, on_term)

    me = identity.describe(os.getpid())
    mine = lambda d: lockfile.names(d, run_dir, attempt) and d.get("supervisor_pid") in (None, os.getpid())
    if not lockfile.update_lock(ws, mine, {
        "supervisor_pid": os.getpid(), "pgid": os.getpgid(0),
        "create_times": {str(os.getpid()): me["create_time"]}, "cmdline": me["cmdline"],
    }):
        _log("the lock no longer names this run and attempt; not starting the trainer")
        contract.append_status(run_dir, "ORPHANED", "supervisor found no lock for this attempt; trainer not started")
        return 1
    # Held until the trainer exits, by both of us: the run is found alive from its folder even
    # if the workspace lock is deleted (runs/liveness.py).
    run_flock = liveness.hold(run_dir)
    folder_id = contract.folder_identity(run_dir)
    lock = lockfile.read_lock(ws).data or {}
    started_at = lock.get("started_at") or contract.utc_now()

    returncode = None
    stderr_offset = 0
    if term["requested"]:
        _log("stop requested before the trainer started")
    else:
        cmd = [sys.executable, "-m", args.trainer, run_dir]
        env = {**os.environ, ATTEMPT_ENV: str(attempt)}
        try:  # this attempt's stderr starts here (the log is appended across attempts)
            stderr_offset = os.path.getsize(os.path.join(run_dir, contract.STDERR_NAME))
        except OSError:
            stderr_offset = 0
        try:
            with open(os.path.join(run_dir, contract.STDOUT_NAME), "ab") as out, \
                    open(os.path.join(run_dir, contract.STDERR_NAME), "ab") as err:
                trainer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                           pass_fds=(run_flock,))
        except OSError as e:
            os.close(run_flock)
            _log(f"cannot start the trainer: {e}")
            write_result(run_dir, attempt, None, started_at, stopped=False, override={
                "state": "FAILED", "reason": f"cannot start the trainer: {e}"})
            lockfile.clear_lock_if(ws, lambda d: lockfile.names(d, run_dir, attempt)
                                   and d.get("supervisor_pid") == os.getpid())
            return 1
        if term["requested"]:
            trainer.send_signal(signal.SIGTERM)
        # The child is unreaped until wait(), so its create time is readable even if it exited.
        lockfile.update_lock(ws, mine, {
            "trainer_pid": trainer.pid, "trainer_cmdline": cmd,
            "create_times": {str(trainer.pid): psutil.Process(trainer.pid).create_time()},
        })
        _log(f"trainer pid {trainer.pid} started: {' '.join(cmd)}")
        contract.append_status(run_dir, "STARTING", f"attempt {attempt}: trainer pid {trainer.pid} started")
        returncode = trainer.wait()
        _log(f"trainer exited with status {returncode}")
    os.close(run_flock)  # released once the trainer (and any child it passed it to) is gone too

    lock_dir = run_dir  # the lock names the folder where the run started
    mine_to_clear = lambda d: lockfile.names(d, lock_dir, attempt) and d.get("supervisor_pid") == os.getpid()  # noqa: E731
    if contract.folder_identity(run_dir) != folder_id:  # moved or deleted while the run went on
        moved = contract.where_now(1)  # our stdout is the run folder's supervisor.log
        if not moved or contract.folder_identity(moved) != folder_id:
            _log(f"the run folder {run_dir} was deleted while the run went on; no result to write")
            lockfile.clear_lock_if(ws, mine_to_clear)
            return 1
        _log(f"the run folder was moved to {moved}; its result goes there")
        run_dir = moved
    result = write_result(run_dir, attempt, returncode, started_at,
                          stopped=term["requested"] or stop_requested(run_dir, attempt),
                          trainer_pid=trainer.pid if trainer else None, stderr_offset=stderr_offset)
    lockfile.clear_lock_if(ws, mine_to_clear)
    _after_the_run(run_dir, ws, attempt, args.trainer, result["state"])
    _log("done")
    return 0


def _after_the_run(run_dir: str, ws: str, attempt: int, trainer: str, state: str) -> None:
    """Start the next queued run, then send the webhook (from a process of its own). The
    result is already written: nothing here may change it, so every failure is only logged."""
    from . import notify, queue
    from .manager import RunManager
    from .status import read_config

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
