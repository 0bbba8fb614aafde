"""Issue 11, defect 3: a damaged checkpoint. Before the fix, one truncated data file in the
newest checkpoint made every resume fail with a TensorStore error naming no checkpoint; the
good previous checkpoint was never tried. Now a checkpoint is verified when restored (it
restores, holds its own step, every value finite); resume falls back to the newest one that
restores, naming the one that failed and why; the damaged one is kept, renamed
step_N.damaged with the reason inside; `resume --checkpoint step_N` picks one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunError, RunManager, State

from .conftest import wait_for, wait_state

pytestmark = pytest.mark.slow


def gemma_ft(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=120)


def attempt_steps(run_dir: str, attempt: int) -> list[int]:
    steps, current = [], None
    for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)):
        if e["event"] == "start":
            current = e["attempt"]
        elif e["event"] == "step" and current == attempt:
            steps.append(e["step"])
    return steps


def truncate_largest_file(folder: str) -> str:
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)
    return biggest


def test_resume_skips_a_damaged_checkpoint_keeps_it_marked_and_can_pick_one(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=contract.DEFAULT_TRAINER)
    run = m.start({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 10**6, "batch_size": 2,
                   "checkpoint_every": 5, "keep_checkpoints": 10, "eval_every": 10**6})
    try:
        wait_for(lambda: len(contract.checkpoint_steps(run.run_dir)) >= 3, 300, what="3 checkpoints")
        m.stop(timeout=120)
        steps = contract.checkpoint_steps(run.run_dir)
        newest, previous = steps[-1], steps[-2]
        truncate_largest_file(contract.checkpoint_path(run.run_dir, newest))

        out = gemma_ft("resume", run.name, "--workspace", m.workspace)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: attempt_steps(run.run_dir, 2), 300, what="attempt 2 steps")
        assert attempt_steps(run.run_dir, 2)[0] == previous + 1
        events = contract.read_jsonl(os.path.join(run.run_dir, contract.METRICS_NAME))
        damaged = [e for e in events if e["event"] == "checkpoint_damaged"]
        assert [e["step"] for e in damaged] == [newest] and damaged[0]["reason"], damaged
        kept = os.path.join(run.run_dir, contract.CHECKPOINTS_DIR, f"step_{newest}.damaged")
        assert os.path.isfile(os.path.join(kept, "DAMAGED.txt"))
        stderr = open(os.path.join(run.run_dir, contract.STDERR_NAME)).read()
        assert f"checkpoint step_{newest} cannot be restored:" in stderr
        assert f"skipped damaged: step_{newest} (" in open(os.path.join(run.run_dir, contract.STDOUT_NAME)).read()
        st = m.status()
        assert st.state == State.RUNNING and st.damaged_checkpoints == [f"checkpoints/step_{newest}.damaged"]
        m.stop(timeout=120)
        assert "damaged:    checkpoints/step_" in gemma_ft("status", "--workspace", m.workspace).stdout

        # resume --checkpoint: an older one on purpose; the newer ones are set aside, not deleted
        with pytest.raises(RunError, match="no checkpoint 'step_999999'"):
            m.resume(run.name, checkpoint="step_999999")
        first = contract.checkpoint_steps(run.run_dir)[0]
        out = gemma_ft("resume", run.name, "--checkpoint", f"step_{first}", "--workspace", m.workspace)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: attempt_steps(run.run_dir, 3), 300, what="attempt 3 steps")
        assert attempt_steps(run.run_dir, 3)[0] == first + 1
        names = os.listdir(os.path.join(run.run_dir, contract.CHECKPOINTS_DIR))
        assert any(n.endswith(".set-aside-3") for n in names), names
    finally:
        if m.status().active:
            m.stop(timeout=120)
    wait_state(m, State.ABORTED)
