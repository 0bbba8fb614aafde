"""Issue 11, defect 5: limits the estimate already knows are checked before start, and the
trainer allocates nothing sized by max_steps. Before the fix, max_seq_len 10^7 (petabytes),
lora_rank 10^6 and max_steps 10^12 (a 7.28 TiB array of learning rates) were accepted and
failed after launch, and log_every > max_steps left a stepping run showing STARTING."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import ConfigError, TrainingConfig, sample_dataset_path
from gemma_ft_widgets.estimate import fit_problem
from gemma_ft_widgets.runs import RunManager, State

from .conftest import wait_for, wait_state


def gemma_ft(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("field,value", [("max_seq_len", 10**7), ("lora_rank", 10**8)])
def test_what_cannot_fit_this_machine_is_refused_before_anything_is_created(tmp_path, field, value):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": "tiny", "dataset": sample_dataset_path(), field: value}))
    out = gemma_ft("start", str(cfg), "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 1 and f"{field}: cannot fit this machine: the estimate is" in out.stderr, out.stderr
    assert "of RAM" in out.stderr and not (tmp_path / "ws").exists()


def test_the_fit_check_counts_ram_and_gpus_together():
    cfg = {"model": "tiny", "lora_rank": 10**6}  # ≈ 28.7 GB
    assert fit_problem(cfg, memory=(23 * 10**9, []))[0] == "lora_rank"
    assert fit_problem(cfg, memory=(23 * 10**9, [80 * 2**30])) is None
    assert fit_problem({"model": "tiny"}, memory=(23 * 10**9, [])) is None


def test_max_steps_beyond_the_optimizers_step_counter_is_refused(dataset):
    with pytest.raises(ConfigError, match="max_steps: must be at most 1,000,000,000"):
        TrainingConfig.from_dict({"model": "tiny", "dataset": dataset, "max_steps": 10**12})


@pytest.mark.slow
def test_a_billion_steps_and_log_every_beyond_them_run_with_bounded_memory(tmp_path, monkeypatch):
    """The real trainer with max_steps 10^9 (the old per-step lr array: 4 GB of f32 plus 8 GB
    of indices) and log_every 2*10^9: RUNNING at its first step, memory bounded, stoppable."""
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=contract.DEFAULT_TRAINER)
    run = m.start({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 10**9, "log_every": 2 * 10**9,
                   "eval_every": 10**9, "checkpoint_every": 10**9, "batch_size": 2})
    try:
        st = wait_state(m, [State.RUNNING, State.FAILED], timeout=240)
        assert st.state == State.RUNNING and st.step == 1 and st.max_steps == 10**9, (st.state, st.reason)
        step = [e for e in contract.read_jsonl(os.path.join(run.run_dir, contract.METRICS_NAME))
                if e["event"] == "step"][0]
        assert step["host_rss_bytes"] < 3 * 2**30, step["host_rss_bytes"]
    finally:
        m.stop(timeout=120)
    st = m.status()
    assert st.state == State.ABORTED and st.step > 1, (st.state, st.reason)
    wait_for(lambda: not m.status().active, 30)
