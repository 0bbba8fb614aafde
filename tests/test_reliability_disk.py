"""Reliability matrix, scenario 15 (disk full while writing a checkpoint), with the real
trainer on the tiny model: the run's checkpoints folder is a small tmpfs that fills up while
orbax writes the next checkpoint. Root only (CI runs as root): mounting needs it."""

from __future__ import annotations

import os
import subprocess

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State, lockfile
from gemma_ft_widgets.runs.status import check_lock
from gemma_ft_widgets.ui import ControlPanel

from .conftest import needs_mount, wait_for, wait_state
from .test_reliability import assert_all_gone, lock_pids

pytestmark = pytest.mark.slow
REAL_TRAINER = contract.DEFAULT_TRAINER


@pytest.fixture
def mounts():
    """mount(path, size) a tmpfs; every mount is lazily unmounted at the end."""
    if os.geteuid() != 0:
        needs_mount("mounting a tmpfs needs root (CI runs as root)")
    done = []

    def mount(path: str, size: str) -> None:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            needs_mount(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        done.append(path)

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


@pytest.fixture
def real_manager(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=REAL_TRAINER)
    yield m
    if os.path.isdir(m.workspace):
        lock = lockfile.read_lock(m.workspace)
        if lock.data and check_lock(lock.data).procs:
            m.stop(force=True)


def test_disk_full_while_checkpointing_fails_the_run_and_keeps_the_previous_checkpoint(real_manager, mounts):
    """Scenario 15 (disk full): the save fails midway with ENOSPC; the run ends FAILED with
    the reason on screen; the previous checkpoint is untouched and complete; once space is
    freed, Resume loads it with the trainer's own restore and trains on."""
    m = real_manager
    run = m.start({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 100_000, "warmup_steps": 0,
                   "batch_size": 8, "checkpoint_every": 30, "eval_every": 100_000, "keep_checkpoints": 3})
    ckpt_dir = os.path.join(run.run_dir, contract.CHECKPOINTS_DIR)
    os.mkdir(ckpt_dir)  # the trainer is still importing jax: nothing is written here yet
    mounts(ckpt_dir, "4m")
    metrics = os.path.join(run.run_dir, contract.METRICS_NAME)
    wait_for(lambda: any(e["event"] == "checkpoint" for e in contract.read_jsonl(metrics)), 240,
             what="the first checkpoint")
    trainer = check_lock(lockfile.read_lock(m.workspace).data).procs["trainer"]
    pids = lock_pids(m.workspace)
    trainer.suspend()  # hold it still while the disk fills (it may be mid-save: that is fine too)
    try:
        good = contract.checkpoint_steps(run.run_dir)
        assert good, "a complete checkpoint before the disk fills"
        vfs = os.statvfs(ckpt_dir)
        with open(os.path.join(ckpt_dir, ".filler"), "wb") as f:
            f.write(b"\0" * (vfs.f_bavail * vfs.f_frsize - 100 * 1024))  # less than a checkpoint left
    finally:
        trainer.resume()

    st = wait_state(m, State.FAILED, timeout=180)
    assert_all_gone(pids)
    assert st.reason.startswith("out of disk space; trainer exited with code 1:") and st.exit_code == 1, st.reason
    assert st.checkpoints[: len(good)] == good and st.can_resume and not st.active
    assert any(n.startswith(".partial-") for n in os.listdir(ckpt_dir))  # the failed save, never listed
    assert not lockfile.read_lock(m.workspace).present
    steps = [e["step"] for e in m.metrics(run)[0] if e["event"] == "step"]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] >= good[-1]  # nothing else lost
    panel = ControlPanel(m.workspace, poll=False, manager=m)
    try:
        assert panel.view == "failed" and "out of disk space" in panel.outcome.banner.value
        assert "No space left on device" in panel.manager.logs(run, "stderr", 400)
    finally:
        panel.close()

    # Space is freed; Resume restores the newest complete checkpoint (the trainer's own loader).
    os.remove(os.path.join(ckpt_dir, ".filler"))
    last_good = st.checkpoints[-1]
    m.resume(run)

    def resumed_steps():
        evs = contract.read_jsonl(metrics)
        starts = [i for i, e in enumerate(evs) if e["event"] == "start"]
        if len(starts) < 2:
            return None
        steps = [e["step"] for e in evs[starts[1]:] if e["event"] == "step"]
        return (evs[starts[1]], steps) if len(steps) >= 5 else None

    second, steps = wait_for(resumed_steps, 240, what="steps after the resume")
    assert second["resume_step"] == last_good and second["attempt"] == 2
    assert steps[:5] == list(range(last_good + 1, last_good + 6))
    assert not any(n.startswith(".partial-") for n in os.listdir(ckpt_dir))  # cleaned up by the restart
    report = m.stop(force=True)
    assert report.state == State.ABORTED and report.group_gone
