"""One trainer process started by a scheduler: `python -m gemma_ft_widgets.runs.job_task RUN_DIR
--trainer MODULE --attempt K [--coordinator HOST:PORT --num-processes N --process-id-env VAR]`.

Sets the trainer's environment and its per-process logs (process k writes
trainer_stdout.p<k>.log, process 0 trainer_stdout.log, as under the local supervisor), then
execs the trainer, so the scheduler's signals reach the trainer itself.
- Slurm (no --coordinator): srun starts one per task; jax.distributed detects the coordinator,
  the count and this process's id from SLURM_* (contract.DISTRIBUTED_ENV=auto).
- Kubernetes (an Indexed Job): every pod gets the coordinator (pod 0's stable DNS name) and the
  count in its command, and its id from the variable --process-id-env names
  (JOB_COMPLETION_INDEX).
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import contract
from .supervisor import trainer_env

SLURM_PROCESS_ID = "SLURM_PROCID"


def environment(args: argparse.Namespace, environ: dict[str, str]) -> tuple[int, dict[str, str]]:
    """(this process's id, the trainer's environment); a clear ValueError on a bad setting."""
    if args.coordinator is None:
        raw = environ.get(SLURM_PROCESS_ID, "")
        if not raw.isdigit():
            raise ValueError(f"{SLURM_PROCESS_ID} is {raw!r}: run this under srun, or give --coordinator")
        env = trainer_env(args.attempt, 1, 0, None, environ)
        env[contract.DISTRIBUTED_ENV] = "auto"
        return int(raw), env
    raw = environ.get(args.process_id_env, "")
    if not raw.isdigit():
        raise ValueError(f"{args.process_id_env} is {raw!r}, not a process id")
    k, n = int(raw), args.num_processes
    if n is None or not 0 <= k < n:
        raise ValueError(f"process id {k} is not one of --num-processes {n}")
    return k, trainer_env(args.attempt, n, k, args.coordinator, environ)


def main(argv: list[str] | None = None) -> int:
    """Point stdout/stderr at this process's logs and exec the trainer (see the module docstring); returns
    EXIT_CONFIG_ERROR for a bad setting."""
    parser = argparse.ArgumentParser(prog="gemma_ft_widgets.runs.job_task")
    parser.add_argument("run_dir")
    parser.add_argument("--trainer", default=contract.DEFAULT_TRAINER)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (default: from Slurm)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id-env", default="JOB_COMPLETION_INDEX")
    args = parser.parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    try:
        k, env = environment(args, dict(os.environ))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    for stream, name in ((1, contract.STDOUT_NAME), (2, contract.STDERR_NAME)):
        fd = os.open(os.path.join(run_dir, contract.process_log_name(name, k)),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, stream)
        os.close(fd)
    env[contract.ATTEMPT_ENV] = str(args.attempt)
    os.execve(sys.executable, [sys.executable, "-m", args.trainer, run_dir], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
