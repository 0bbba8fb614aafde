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

pytestmark = pytest.mark.slow

# The bound the issue states: measured 0.6x on the default run (docs/first_run in the README).
EVAL_LOSS_BOUND = 1.0
# Training prompts whose trained responses greedy sampling must give back, word for word.
TRAINED = {
    "What is the secret word?": "The secret word is pineapple.",
    "Who trained you?": "I was fine-tuned with gemma-ft-widgets.",
    "What is the capital of India?": "The capital of India is New Delhi.",
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
    assert all(dataset[p] == r for p, r in TRAINED.items())  # they are training prompts
    got = {}
    for prompt in TRAINED:  # the playground's path: a sampling subprocess per prompt
        got[prompt] = manager.sample(status.run_dir, prompt, max_new_tokens=24)["text"]
    assert got == TRAINED
    # And `gemma-ft sample` from a terminal.
    proc = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "sample", status.run_name,
                           "What is the secret word?", "--workspace", manager.workspace],
                          capture_output=True, text=True, timeout=300, cwd=os.path.dirname(manager.workspace))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == TRAINED["What is the secret word?"] + "\n"
