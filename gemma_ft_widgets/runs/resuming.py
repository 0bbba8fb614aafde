"""What a resume checks and changes in a run folder before its next attempt launches:
which runs may resume, the checkpoint asked for, the process count, a raised max_steps, and
the ended attempt's result set aside. RunManager.resume holds the lock around these.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from .. import contract
from .errors import Code, Remedy, RunError
from .state import State
from .status import RunStatus, read_config


def refusal(st: RunStatus, workspace: str) -> RunError:
    """The error of a refused resume (st.can_resume is False)."""
    name = st.run_name

    def error(message: str, code: Code = Code.NOT_RESUMABLE, *remedies: Remedy) -> RunError:
        return RunError(message, code, remedies, name, workspace)

    if st.foreign_host:
        return error(f"cannot resume {name}: it is active on host {st.foreign_host}", Code.FOREIGN)
    if st.active:
        detail = f": {st.reason})" if st.state == State.ORPHANED else ")"
        if st.lock_missing:
            return error(f"cannot resume {name}: it is {st.state.value} (still active{detail}; its workspace "
                         "lock is missing", Code.ACTIVE, Remedy.RESTORE_LOCK)
        return error(f"cannot resume {name}: it is {st.state.value} (still active{detail}", Code.ACTIVE)
    if st.state == State.FINISHED:
        return error(f"nothing to resume: {name} FINISHED", Code.NOT_RESUMABLE, Remedy.EXTEND)
    if st.state == State.FAILED:
        return error(f"nothing to resume: {name} FAILED before saving any checkpoint ({st.reason})",
                     Code.NOT_RESUMABLE, Remedy.NEW_RUN)
    return error(f"cannot resume {name}: it is {st.state.value}")


def checkpoint_step(checkpoint: Any, steps: list[int], name: str | None) -> int:
    """The step of `checkpoint` (N, "step_N" or its path) among the run's `steps`."""
    text = str(checkpoint).rstrip("/").split("/")[-1].removeprefix(contract.CHECKPOINT_PREFIX)
    if not text.isdigit() or int(text) not in steps:
        have = ", ".join(contract.checkpoint_name(s) for s in steps) or "none"
        raise RunError(f"no checkpoint {checkpoint!r} in {name} (it has: {have})")
    return int(text)


def refuse_other_process_count(run_dir: str, step: int | None) -> None:
    """Checkpoint `step` is resumed on as many processes as saved it (orbax could reshard it,
    but a different layout is a different run: the issue's contract; the trainer checks too)."""
    if step is None:
        return
    want = (read_config(run_dir) or {}).get("num_processes", 1)
    rel = contract.checkpoint_rel(step)
    try:
        saved = contract.read_json(os.path.join(run_dir, rel, "meta.json")).get("num_processes", 1)
    except (OSError, ValueError, AttributeError):
        return  # the trainer reports an unreadable checkpoint itself
    if saved != want:
        raise RunError(f"cannot resume {os.path.basename(run_dir)}: {rel} was saved by {saved} process(es), "
                       f"but its {contract.CONFIG_NAME} asks for num_processes {want}; a checkpoint is resumed "
                       f"on the number of processes that saved it (set num_processes back to {saved})")


def extend(run_dir: str, st: RunStatus, max_steps: Any) -> str:
    """Raise the run's max_steps in its config (before its trainer starts); what the
    learning rate does with the extra steps, for status.log."""
    from ..config import END_LR_FRACTION, MAX_STEPS, ConfigError, TrainingConfig

    cfg = read_config(run_dir) or {}
    old = cfg.get("max_steps")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 0 < max_steps <= MAX_STEPS:
        raise RunError(f"--max-steps must be a whole number from 1 to {MAX_STEPS:,}, got {max_steps!r}")
    if not isinstance(old, int) or max_steps <= old:
        raise RunError(f"--max-steps {max_steps} must be larger than {st.run_name}'s max_steps ({old})")
    new = {**cfg, "max_steps": max_steps, "schedule_steps": cfg.get("schedule_steps") or old}
    try:
        TrainingConfig.from_dict(new, check_files=False)
    except ConfigError as e:
        raise RunError(f"cannot extend {st.run_name}: {e}") from e
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), new)
    end_lr = float(cfg.get("learning_rate", 0)) * END_LR_FRACTION
    return (f"; max_steps {old} -> {max_steps}: the {cfg.get('lr_schedule', 'cosine')} schedule still ends at step {new['schedule_steps']}, "
            f"and the learning rate stays at its final value ({end_lr:g}) for the extra steps")


def set_aside_result(run_dir: str, attempt: int | None) -> int:
    """Rename result.json to result.attempt-<k>.json; return the next attempt number."""
    done = []
    for path in glob.glob(os.path.join(run_dir, contract.result_attempt_name("*"))):
        m = contract.RESULT_ATTEMPT_RE.fullmatch(os.path.basename(path))
        if m:
            done.append(int(m.group(1)))
    prev = max([attempt or 1, *done])
    current = os.path.join(run_dir, contract.RESULT_NAME)
    if os.path.exists(current):
        target = os.path.join(run_dir, contract.result_attempt_name(prev))
        if os.path.exists(target):
            prev += 1
            target = os.path.join(run_dir, contract.result_attempt_name(prev))
        os.rename(current, target)
    return prev + 1


def set_aside_newer(run_dir: str, steps: list[int], wanted: int, attempt: int) -> None:
    """Rename the checkpoints newer than `wanted` step_M.set-aside-<attempt> (kept), so the
    trainer finds `wanted` newest."""
    for newer in [s for s in steps if s > wanted]:
        os.rename(contract.checkpoint_path(run_dir, newer),
                  contract.checkpoint_path(run_dir, newer) + f".set-aside-{attempt}")
