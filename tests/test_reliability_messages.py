"""Issue 11, defect 7: data and messages. Each of these failed before the fix: a CSV with a
UTF-8 byte-order mark was refused line by line, 200,000 bad lines printed a 17 MB error, a stop
while STARTING claimed "after saving a checkpoint", `gemma-ft status | head` printed a
BrokenPipeError traceback, and the default warmup (10) refused `max_steps: 5`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gemma_ft_widgets import datasets
from gemma_ft_widgets.config import ConfigError, TrainingConfig
from gemma_ft_widgets.runs import State, lockfile

from .conftest import wait_for, wait_state


def gemma_ft(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_a_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes("prompt,response\nHi,Hello\nÇa va?,Oui\n".encode("utf-8-sig"))  # "CSV UTF-8"
    records, fmt = datasets.load_records(str(path))
    assert fmt == "prompt_response" and records[0] == {"prompt": "Hi", "response": "Hello"}
    TrainingConfig.from_dict({"model": "tiny", "dataset": str(path), "batch_size": 2})


def test_a_dataset_with_200000_bad_lines_gives_a_short_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "good"}\n' + "not json\n" * 200_000)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": "tiny", "dataset": str(path), "batch_size": 1}))
    out = gemma_ft("start", str(cfg), "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 1 and "bad.jsonl line 2: not valid JSON" in out.stderr
    assert "... and 199,980 more problem(s) in the file" in out.stderr
    assert len(out.stderr) < 5000, len(out.stderr)
    assert not (tmp_path / "ws").exists()


def test_a_stop_while_starting_does_not_claim_a_checkpoint(manager, make_config, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_LOAD_TIME", "3")
    run = manager.start(make_config(max_steps=40))
    wait_for(lambda: (lockfile.read_lock(workspace).data or {}).get("trainer_pid"), 30, what="the trainer")
    assert manager.status().state == State.STARTING
    manager.stop()
    st = wait_state(manager, State.ABORTED)
    assert st.reason == "stopped on request while starting, before any step; no checkpoint was saved", st.reason
    assert not st.checkpoints and "after saving" not in st.reason
    out = gemma_ft("status", run.name, "--workspace", workspace)
    assert "after saving a checkpoint" not in out.stdout


def test_status_into_a_closed_pipe_prints_no_traceback(manager, make_config, workspace):
    manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    for args in (("status",), ("list",), ("status", "--json")):
        # `gemma-ft status | head -0`: the reader is gone before anything is written
        proc = subprocess.Popen([sys.executable, "-m", "gemma_ft_widgets.cli", *args, "--workspace", workspace],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(30)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert proc.returncode == 0


def test_the_default_warmup_fits_a_short_run_and_an_explicit_one_says_why(dataset):
    cfg = TrainingConfig.from_dict({"model": "tiny", "dataset": dataset, "max_steps": 5})
    assert cfg.warmup_steps == 0
    assert TrainingConfig.from_dict({"model": "tiny", "dataset": dataset, "max_steps": 50}).warmup_steps == 5
    assert TrainingConfig.from_dict({"model": "tiny", "dataset": dataset}).warmup_steps == 10
    with pytest.raises(ConfigError, match=r"warmup_steps: must not exceed max_steps \(5\): the learning rate "
                                          r"would still be rising"):
        TrainingConfig.from_dict({"model": "tiny", "dataset": dataset, "max_steps": 5, "warmup_steps": 10})
