"""Issue 11, defect 7: a dataset that max_seq_len leaves nothing to train on, or whose eval
split it empties, is refused at Start (panel and `gemma-ft start`), before a run folder
exists. Before, the run started and failed at trainer setup (FAILED, exit 2), after loading
the model. The simulated trainer never tokenises: the refusal can only come from the check
before start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from gemma_ft_widgets import length_check
from gemma_ft_widgets.config import TrainingConfig
from gemma_ft_widgets.datasets import split_indices

LONG = {"prompt": "word " * 200, "response": "x"}  # > 200 tokens with the tiny tokenizer
SHORT = {"prompt": "a", "response": "b"}


def eval_only_long(tmp_path) -> tuple[str, int]:
    """A dataset of 4 long and 16 short prompts, and a seed whose 2 eval examples are long."""
    seed = next(s for s in range(500) if all(i < 4 for i in split_indices(20, 0.1, s)[1]))
    path = tmp_path / "long_eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [LONG] * 4 + [SHORT] * 16))
    return str(path), seed


def test_an_eval_split_emptied_by_max_seq_len_is_refused_at_start_by_the_cli(tmp_path, sim_env):
    data, seed = eval_only_long(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": "tiny", "dataset": data, "max_seq_len": 32, "eval_fraction": 0.1,
                               "seed": seed, "batch_size": 2, "max_steps": 5}))
    ws = tmp_path / "ws"
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "start", str(cfg), "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "max_seq_len: " in out.stderr and "all 2 eval examples were dropped" in out.stderr, out.stderr
    assert "set eval_fraction to 0" in out.stderr and not ws.exists()
    # eval_fraction 0 leaves 4 dropped of 20: that trains, and is not refused
    assert length_check.length_problems(TrainingConfig.from_dict(
        {"model": "tiny", "dataset": data, "max_seq_len": 32, "eval_fraction": 0.0})) == []


def test_an_eval_split_emptied_by_max_seq_len_is_refused_at_start_by_the_panel(tmp_path, make_panel, workspace):
    data, seed = eval_only_long(tmp_path)
    p = make_panel()
    values = {"dataset": data, "max_seq_len": 32, "eval_fraction": 0.1, "seed": seed, "batch_size": 2,
              "max_steps": 5, "warmup_steps": 0}
    for name, value in values.items():
        p.form.fields[name].value = value
    assert p.form.valid, {k: v.value for k, v in p.form.errors.items() if v.value}
    p.form.start_button.click()
    assert p.wait_actions(60)
    p.refresh()
    assert p.view == "form" and "config has errors" in p.form.message.value
    assert "all 2 eval examples were dropped" in p.form.errors["max_seq_len"].value
    assert os.listdir(workspace) == [], os.listdir(workspace)


def test_nothing_left_to_train_is_refused_and_names_the_shortest_prompt(tmp_path, sim_env):
    import pytest

    from gemma_ft_widgets.config import ConfigError
    from gemma_ft_widgets.runs import RunManager

    path = tmp_path / "all_long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [LONG] * 6))
    with pytest.raises(ConfigError, match=r"max_seq_len: .*no training example keeps a response token within "
                                          r"max_seq_len=32 \(all \d dropped; the shortest prompt has \d+ tokens\)"):
        RunManager(str(tmp_path / "ws")).start({"model": "tiny", "dataset": str(path), "max_seq_len": 32,
                                                "batch_size": 2, "max_steps": 5})
    assert not (tmp_path / "ws").exists()


def test_a_model_without_a_local_tokenizer_is_refused_only_when_sure(tmp_path, monkeypatch):
    """gemma3-1b is not in this (empty) kagglehub cache: no tokenizer is fetched for the check,
    a prompt counts one token per 64 bytes at least, so only a hopeless one is refused."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"prompt": "w" * 64 * 40, "response": "x"}) + "\n")
    cfg = TrainingConfig.from_dict({"model": "gemma3-1b", "dataset": str(huge), "max_seq_len": 32,
                                    "batch_size": 1, "eval_fraction": 0.0})
    (err,) = length_check.length_problems(cfg)
    assert err.field == "max_seq_len" and re.search(r"the shortest prompt has 4\d tokens, a lower bound: the "
                                                    r"tokenizer of gemma3-1b is not on this machine yet", err.message)
    merely_long = tmp_path / "long.jsonl"
    merely_long.write_text(json.dumps({"prompt": "w" * 64 * 20, "response": "x"}) + "\n")
    assert length_check.length_problems(cfg.replace(dataset=str(merely_long))) == []


def test_the_queue_refuses_such_a_config_when_it_is_added(tmp_path, manager):
    data, seed = eval_only_long(tmp_path)
    import pytest

    from gemma_ft_widgets.config import ConfigError

    with pytest.raises(ConfigError, match="all 2 eval examples were dropped"):
        manager.queue.add({"model": "tiny", "dataset": data, "max_seq_len": 32, "eval_fraction": 0.1,
                           "seed": seed, "batch_size": 2, "max_steps": 5})
    assert manager.queue.list().entries == [] and manager.runs() == []
