"""Slurm, through its own commands: the batch script of a run, sbatch, the job's state, scancel.

A run launched through Slurm (`gemma-ft launch --slurm`) is one batch job: its script runs
runs/job_supervisor.py on the job's first node, which starts the trainers with `srun` (one
task per process) and writes result.json. jax.distributed finds the coordinator, process count
and process id in the tasks' SLURM_* variables (jax's SlurmCluster). Status asks Slurm about
the job id the workspace lock records; a stop goes through scancel, never through signals to
processes on other hosts.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys

from .. import contract

SCRIPT_NAME = "slurm.sbatch"  # in the run folder
JOB_LOG_PATTERN = "slurm-%j.out"  # the batch script's own output, in the run folder
COMMAND_TIMEOUT_S = 20.0
# Job states in which the job still holds (or waits for) its allocation.
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})


class SlurmError(RuntimeError):
    """A Slurm command failed, or is not installed here."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The `gemma-ft launch --slurm` settings that become #SBATCH lines."""

    nodes: int = 1
    tasks_per_node: int = 1
    partition: str | None = None
    time: str | None = None  # Slurm's --time, e.g. "02:00:00"
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    extra: tuple[str, ...] = ()  # more "#SBATCH" options, e.g. "--account=abc"

    @property
    def processes(self) -> int:
        """The number of trainer processes: nodes times tasks per node."""
        return self.nodes * self.tasks_per_node

    def check(self) -> None:
        """ValueError, naming the CLI option, for a count that is not a positive integer or an extra option that is not
        one --option[=value]."""
        for name in ("nodes", "tasks_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("gpus_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for option in self.extra:
            if not option.startswith("--") or "\n" in option:
                raise ValueError(f"an extra sbatch option must be one --option[=value], got {option!r}")


def script(run_dir: str, workspace: str, trainer: str, attempt: int, opts: Options,
           env: dict[str, str]) -> str:
    """The batch script. The run folder and the workspace must be on a file system every node
    sees; the Python and the package must be at the same path on every node."""
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=gemma-ft-{os.path.basename(run_dir)}"[:200],
             f"#SBATCH --nodes={opts.nodes}",
             f"#SBATCH --ntasks-per-node={opts.tasks_per_node}",
             f"#SBATCH --output={os.path.join(run_dir, JOB_LOG_PATTERN)}",
             f"#SBATCH --chdir={run_dir}"]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.time:
        lines.append(f"#SBATCH --time={opts.time}")
    if opts.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={opts.gpus_per_node}")
    if opts.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    lines += [f"#SBATCH {option}" for option in opts.extra]
    lines += ["# Written by `gemma-ft launch --slurm`; submit it with sbatch (or launch with --submit).",
              "# One task per trainer process; jax.distributed reads SLURM_* in each task.",
              "set -e"]
    for key in ("PYTHONPATH", contract.CPU_DEVICES_ENV):
        if env.get(key):
            lines.append(f"export {key}={shlex.quote(env[key])}")
    cmd = [sys.executable, "-m", "gemma_ft_widgets.runs.job_supervisor", run_dir, "--workspace", workspace,
           "--trainer", trainer, "--attempt", str(attempt)]
    lines.append("exec " + shlex.join(cmd))
    return "\n".join(lines) + "\n"


def srun_command(run_dir: str, trainer: str, attempt: int) -> list[str]:
    """Inside the job: one task per process, each running runs/job_task.py. One task that
    fails ends the others (--kill-on-bad-exit): a peer would wait in a collective forever."""
    return ["srun", "--kill-on-bad-exit=1", "--unbuffered", sys.executable, "-m", "gemma_ft_widgets.runs.job_task",
            run_dir, "--trainer", trainer, "--attempt", str(attempt)]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} is not installed here (is this a Slurm login node?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {COMMAND_TIMEOUT_S:.0f} s") from None


def submit(script_path: str) -> str:
    """sbatch the script; returns the job id."""
    done = _run(["sbatch", "--parsable", script_path])
    if done.returncode != 0:
        raise SlurmError(f"sbatch failed: {(done.stderr or done.stdout).strip()}")
    job_id = done.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {done.stdout.strip()!r}")
    return job_id


def job_state(job_id: str) -> str | None:
    """The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, ...), None when Slurm no
    longer knows the job (scontrol forgets it MinJobAge after its end, and sacct needs
    accounting). Raises SlurmError when Slurm cannot be asked."""
    done = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if done.returncode == 0:
        for field in done.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
    elif "Invalid job id" not in done.stderr:
        raise SlurmError(f"scontrol show job {job_id} failed: {done.stderr.strip()}")
    try:
        done = _run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"])
    except SlurmError:
        return None
    states = done.stdout.split() if done.returncode == 0 else []
    return states[0] if states else None  # "CANCELLED by 0" is split: the word is the state


def cancel(job_id: str, signal_name: str | None = None) -> None:
    """scancel the job, or with `signal_name` (e.g. "INT") only signal its steps' tasks."""
    args = ["scancel"] + ([f"--signal={signal_name}"] if signal_name else []) + [str(job_id)]
    done = _run(args)
    if done.returncode != 0:
        raise SlurmError(f"{shlex.join(args)} failed: {done.stderr.strip()}")
