"""A new user's first run: the panel form's defaults (LoRA on `tiny`, the sample dataset, the
default steps), started with the form's Start button and trained to the end by the real
trainer, must visibly learn, and the playground's sampler must give back trained answers.

`tiny` starts from the packaged pretrained base (scripts/pretrain_tiny.py); on the random
init (`tiny-random`) the same run plateaus near ln(512) = 6.2 (tests/test_train_loop.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract, demo_config
from gemma_ft_widgets.runs import RunManager, State
from gemma_ft_widgets.runs.launch import package_env

pytestmark = pytest.mark.slow

# Measured on the default run: eval loss 1.43 at step 50, 0.68 at step 300 (README, "The first run").
EVAL_LOSS_BOUND = 0.8
# Training prompts (in the train split) whose trained responses greedy sampling must give back,
# word for word: two memorised answers and one of the letter counts (24 of the 40 come out
# right; capitals mostly do not: the base knows which city is in which country, but 300 LoRA
# steps link few of them to "capital").
TRAINED = {
    "What is the secret word?": "The secret word is pineapple.",
    "Who trained you?": "I was fine-tuned with gemma-ft-widgets.",  # 31 tokens of this tokenizer
    "How many letters are in the word 'tiger'?": "The word 'tiger' has five letters.",
}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, monkeypatch_module):
    from gemma_ft_widgets.ui import ControlPanel

    monkeypatch_module.delenv(contract.TRAINER_ENV, raising=False)  # the real trainer
    ws = str(tmp_path_factory.mktemp("first_run"))
    panel = ControlPanel(ws, poll=False)
    try:
        config = panel.form.config
        assert panel.form.valid and config is not None
        panel.form.start_button.click()
        assert panel.wait_actions(300)
    finally:
        panel.close()
    manager = RunManager(ws)
    status = manager.wait(timeout=1200)
    return manager, config, status


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_form_gemma_ft_demo_and_the_notebooks_start_the_same_run(first_run):
    _, config, _ = first_run
    assert config == demo_config()
    assert config.model == "tiny" and config.method == "lora"


def test_the_default_run_learns(first_run):
    manager, config, status = first_run
    assert status.state == State.FINISHED and status.step == config.max_steps, status.reason
    events, _ = manager.metrics(status.run_dir)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    evals = [e["eval_loss"] for e in events if e["event"] == "eval"]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; eval {[round(v, 3) for v in evals]}")
    assert losses[-1] < losses[0] / 3, (losses[0], losses[-1])
    assert evals[-1] < EVAL_LOSS_BOUND and evals[-1] < evals[0], evals


def test_greedy_samples_give_back_trained_responses(first_run):
    manager, _, status = first_run
    with open(demo_config().dataset, encoding="utf-8") as f:
        dataset = {r["prompt"]: r["response"] for r in map(json.loads, f)}
    assert all(dataset[p] == r for p, r in TRAINED.items())
    from gemma_ft_widgets.train import data  # the trainer's split: they are training prompts

    with open(demo_config().dataset, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    train_idx, _ = data.split_indices(len(records), demo_config().eval_fraction, demo_config().seed)
    assert set(TRAINED) <= {records[i]["prompt"] for i in train_idx}
    got = {}
    for prompt in TRAINED:  # the playground's path: a sampling subprocess per prompt
        got[prompt] = manager.sample(status.run_dir, prompt, max_new_tokens=48)["text"]
    assert got == TRAINED
    # And `gemma-ft sample` from a terminal.
    proc = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "sample", status.run_name,
                           "What is the secret word?", "--workspace", manager.workspace],
                          capture_output=True, text=True, timeout=300, cwd=os.path.dirname(manager.workspace),
                          env=package_env())  # this checkout's package, whatever the cwd
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == TRAINED["What is the secret word?"] + "\n"
