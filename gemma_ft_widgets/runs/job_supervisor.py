"""The supervisor of a run inside a Slurm job: `python -m gemma_ft_widgets.runs.job_supervisor
RUN_DIR --workspace WS --trainer MODULE --attempt K`, exec'd by the batch script that
`gemma-ft launch --slurm` writes (runs/slurm.py).

What runs/supervisor.py does for a local run, for a job: it takes (or confirms) the workspace
lock, which records the job id rather than pids (other hosts' pids mean nothing here); starts
the trainers with srun, one task per process (runs/job_task.py); waits; writes result.json and
clears the lock. One failing task ends the others (srun --kill-on-bad-exit), and the result
names it from srun's report ("task 1: Killed" -> "process 1 of 2 killed by SIGKILL").
A cancel (scancel) sends SIGTERM to the job: srun passes it on, the trainers save and exit,
and the run is ABORTED.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from .. import contract
from . import identity, launch, lockfile, slurm
from .results import write_result
from .status import check_lock, read_config, stop_requested

JOB_ID_ENV = "SLURM_JOB_ID"
# srun's report of a task's end: "srun: error: node1: task 1: Killed",
# "srun: error: node1: tasks 0-1: Exited with exit code 3".
_TASK_END = re.compile(r"srun: error: \S+: tasks? (\d+)(?:[-,]\S*)?: (.+)$")
_SIGNALS = {"Killed": signal.SIGKILL, "Terminated": signal.SIGTERM, "Segmentation fault": signal.SIGSEGV,
            "Aborted": signal.SIGABRT, "Interrupt": signal.SIGINT, "Bus error": signal.SIGBUS}


def _log(msg: str) -> None:
    print(f"{contract.utc_now()} job_supervisor[{os.getpid()}] {msg}", flush=True)


def lock_data(run_dir: str, attempt: int, trainer: str, job_id: str | None, launcher: dict | None) -> dict:
    """The workspace lock of a scheduled run: the job, not pids, says whether it lives."""
    return {"run_dir": run_dir, "attempt": attempt, "trainer_module": trainer,
            "supervisor_pid": None, "trainer_pid": None, "pgid": None, "create_times": {},
            "cmdline": None, "trainer_cmdline": None,
            "hostname": identity.hostname(), "boot_id": identity.boot_id(), "started_at": contract.utc_now(),
            "scheduler": {"kind": "slurm", "job_id": job_id}, "launcher": launcher}


def take_lock(ws: str, run_dir: str, attempt: int, trainer: str, job_id: str) -> str | None:
    """Confirm the lock names this run and job, or create it (a script submitted by hand).
    None when done, else why the run cannot go on."""
    with lockfile.guard(ws):
        current = lockfile.read_lock(ws, locked=True)
        if current.data is not None and lockfile.names(current.data, run_dir):
            job = (current.data.get("scheduler") or {}).get("job_id")
            if current.data.get("attempt") != attempt or job not in (None, job_id):
                return f"the workspace lock names attempt {current.data.get('attempt')} (job {job}) of this run"
            new = {**current.data, "scheduler": {"kind": "slurm", "job_id": job_id}}
            contract.atomic_write_json(lockfile.lock_path(ws), new, mode=lockfile.LOCK_MODE)
            return None
        if current.data is not None and not check_lock(current.data).stale:
            return f"another run is active in the workspace: {os.path.basename(current.data['run_dir'])}"
        lockfile.remove_lock(ws)
        lockfile.create_lock(ws, lock_data(run_dir, attempt, trainer, job_id, None))
        return None


def task_end(srun_log: str) -> tuple[int, int] | None:
    """(task, exit status as Popen writes it) of the first task srun reports as ended badly."""
    for line in srun_log.splitlines():
        m = _TASK_END.search(line.strip())
        if not m:
            continue
        task, what = int(m.group(1)), m.group(2).strip()
        code = re.fullmatch(r"Exited with exit code (\d+)", what)
        if code:
            return task, int(code.group(1))
        if what in _SIGNALS:
            return task, -int(_SIGNALS[what])
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one attempt inside the Slurm job: take the lock, srun the trainers, write result.json."""
    args = launch.supervisor_arguments("gemma_ft_widgets.runs.job_supervisor").parse_args(argv)
    run_dir, ws, attempt = os.path.abspath(args.run_dir), os.path.abspath(args.workspace), args.attempt
    job_id = os.environ.get(JOB_ID_ENV, "")
    log_path = os.path.join(run_dir, contract.SUPERVISOR_LOG_NAME)
    _output_to(log_path)
    if not job_id.isdigit():
        _log(f"{JOB_ID_ENV} is {job_id!r}: this runs inside a Slurm job (sbatch the run's {slurm.SCRIPT_NAME})")
        return contract.EXIT_CONFIG_ERROR

    cancelled = {"yes": False}

    def on_term(signum, frame):  # scancel: Slurm signals the tasks (and srun) itself
        cancelled["yes"] = True
        _log("SIGTERM: the job is being cancelled; waiting for the trainers to save and exit")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, lambda s, f: _log("SIGINT ignored (the trainers handle stops)"))
    started_at = contract.utc_now()
    why_not = take_lock(ws, run_dir, attempt, args.trainer, job_id)
    if why_not:
        _log(f"not starting: {why_not}")
        write_result(run_dir, attempt, None, started_at, stopped=False,
                     override={"state": "FAILED", "reason": f"Slurm job {job_id} did not start the trainers: {why_not}"})
        return 1
    n = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    _note_start(run_dir, attempt, job_id, n)
    stderr_offset = _size(os.path.join(run_dir, contract.STDERR_NAME))
    offset = _size(log_path)
    cmd = slurm.srun_command(run_dir, args.trainer, attempt)
    _log(f"job {job_id}: {' '.join(cmd)}")
    try:
        srun = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)  # its reports go to our log
    except OSError as e:
        write_result(run_dir, attempt, None, started_at, stopped=False,
                     override={"state": "FAILED", "reason": f"cannot start srun: {e}"})
        _clear(ws, run_dir, attempt)
        return 1
    code = srun.wait()
    while code is None:  # pragma: no cover - wait() returns the status
        code = srun.wait()
    _log(f"srun exited with status {code}")
    with open(log_path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        reported = task_end(f.read())
    k, status = reported if reported else (0, code if code <= 128 else -(code - 128))
    _write_job_result(run_dir, attempt, job_id, started_at, cancelled["yes"], (k, n), status,
                      stderr_offset if k == 0 else 0)
    _clear(ws, run_dir, attempt)
    _log("done")
    return 0


def _output_to(log_path: str) -> None:
    """Our stdout and stderr (and srun's, inherited) append to the run's supervisor.log."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _note_start(run_dir: str, attempt: int, job_id: str, n: int) -> None:
    """status.log: how many trainers start where (and the config's count when it differs)."""
    wanted = (read_config(run_dir) or {}).get("num_processes", 1)
    nodes = os.environ.get("SLURM_JOB_NODELIST", "?")
    contract.append_status(run_dir, "STARTING", f"attempt {attempt}: Slurm job {job_id} starts {n} trainer "
                           f"process(es) on {nodes}" + (f" (the config says num_processes {wanted})"
                                                        if wanted != n else ""))


def _write_job_result(run_dir: str, attempt: int, job_id: str, started_at: str, cancelled: bool,
                      process: tuple[int, int], status: int, stderr_offset: int) -> None:
    """result.json from the deciding process (k of n) and its status; a cancel is ABORTED."""
    k, n = process
    stopped = cancelled or stop_requested(run_dir, attempt)
    override = None
    if cancelled and not stop_requested(run_dir, attempt) and status not in (0,):
        override = {"state": "ABORTED", "reason": f"Slurm job {job_id} was cancelled (scancel); "
                    + ("the trainers saved a checkpoint and exited" if status == contract.EXIT_ABORTED
                       else f"process {k} of {n} ended with status {status}")}
    write_result(run_dir, attempt, status, started_at, stopped=stopped, override=override,
                 stderr_offset=stderr_offset, process=(k, n) if n > 1 else None)


def _clear(ws: str, run_dir: str, attempt: int) -> None:
    lockfile.clear_lock_if(ws, lambda d: lockfile.names(d, run_dir, attempt) and bool(d.get("scheduler")))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
