"""Issue 11, defect 9: `resume --max-steps N` extends a FINISHED run with its optimizer state.
Before the fix, resume said "nothing to resume: NAME FINISHED". The schedule says what it does
with the extra steps: the cosine still ends where it ended, and the learning rate holds at its
final value (config `schedule_steps`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State

from .conftest import wait_state


def gemma_ft(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=120)


def attempt_events(run_dir: str, attempt: int, kind: str = "step") -> list[dict]:
    out, current = [], None
    for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)):
        if e["event"] == "start":
            current = e["attempt"]
        elif e["event"] == kind and current == attempt:
            out.append(e)
    return out


def test_resume_max_steps_extends_a_finished_run(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=10, checkpoint_every=5))
    wait_state(manager, State.FINISHED)
    out = gemma_ft("resume", run.name, "--workspace", workspace)
    assert out.returncode == 1 and f"gemma-ft resume {run.name} --max-steps N" in out.stderr, out.stderr
    out = gemma_ft("resume", run.name, "--max-steps", "10", "--workspace", workspace)
    assert out.returncode == 1 and "must be larger than" in out.stderr
    out = gemma_ft("resume", run.name, "--max-steps", "20", "--workspace", workspace)
    assert out.returncode == 0, out.stderr
    st = wait_state(manager, State.FINISHED)
    assert st.step == 20 and st.max_steps == 20 and st.attempt == 2
    assert [e["step"] for e in attempt_events(run.run_dir, 2)] == list(range(11, 21))
    cfg = contract.read_json(os.path.join(run.run_dir, contract.CONFIG_NAME))
    assert cfg["max_steps"] == 20 and cfg["schedule_steps"] == 10
    log = open(os.path.join(run.run_dir, contract.STATUS_LOG_NAME)).read()
    assert "max_steps 10 -> 20: the cosine schedule still ends at step 10, and the learning rate stays at its " \
           "final value" in log


@pytest.mark.slow
def test_an_extended_run_continues_with_its_optimizer_state_at_the_final_learning_rate(tmp_path, monkeypatch):
    """The real trainer: 6 steps, FINISHED, extended to 10, gives the losses of one straight
    run of 10 steps with the same schedule (so the optimizer state was carried over), at a
    constant learning rate of 10% of the peak for steps 7-10."""
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    base = {"model": "tiny", "dataset": sample_dataset_path(), "method": "full", "learning_rate": 3e-3,
            "warmup_steps": 0, "checkpoint_every": 3, "eval_every": 1000, "batch_size": 4}
    extended = RunManager(str(tmp_path / "a"), trainer=contract.DEFAULT_TRAINER)
    straight = RunManager(str(tmp_path / "b"), trainer=contract.DEFAULT_TRAINER)
    run = extended.start({**base, "max_steps": 6})
    ref = straight.start({**base, "max_steps": 10, "schedule_steps": 6})
    wait_state(extended, State.FINISHED, timeout=300)
    extended.resume(run.name, max_steps=10)
    wait_state(extended, State.FINISHED, timeout=300)
    wait_state(straight, State.FINISHED, timeout=300)
    after = attempt_events(run.run_dir, 2)
    reference = {e["step"]: e for e in attempt_events(ref.run_dir, 1)}
    assert [e["step"] for e in after] == [7, 8, 9, 10]
    for e in after:
        assert e["lr"] == pytest.approx(3e-4, rel=1e-4)
        assert e["loss"] == pytest.approx(reference[e["step"]]["loss"], rel=1e-4), e["step"]
    assert "schedule: cosine decay ends at step 6" in open(os.path.join(run.run_dir, contract.STDOUT_NAME)).read()
