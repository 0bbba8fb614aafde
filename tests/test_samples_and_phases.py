"""Samples during training and progress while STARTING (#20), through the simulated trainer:
the panel's samples table (newest first) and phase line, `gemma-ft logs --stream samples` and
`gemma-ft status`. The real trainer's side: test_train_loop.py (samples) and
test_train_phases.py (phases, with a local HTTP server standing in for Kaggle)."""

from __future__ import annotations

import json
import re

from gemma_ft_widgets import cli, contract
from gemma_ft_widgets.config import ConfigError, TrainingConfig, sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State, phases
from gemma_ft_widgets.train import eval_samples
from gemma_ft_widgets.train.simulated import SAMPLE_PROMPTS

from .conftest import wait_for, wait_state
from .test_ui_panel import start, until


def test_panel_shows_the_starting_phases_then_a_samples_table_newest_first(make_panel, workspace, sim_env,
                                                                           capsys):
    sim_env.setenv("GEMMA_FT_SIM_LOAD_TIME", "6")
    p = make_panel()
    run_dir = start(p, max_steps=30, eval_every=10, eval_prompts="Say hi.\nCount to three.")
    seen = set()

    def phase_shown():
        text = p.dashboard.phase.value
        seen.update(m for m in ("loading the model", "tokenizing the data: 100 of 100 examples",
                                "compiling the train step (last time 2 s for the same shapes)") if m in text)
        return p.state != "STARTING"

    until(p, phase_shown, timeout=120, what="the run past STARTING")
    assert len(seen) >= 2, seen  # the phases follow one another (polled, so one may be missed)
    # While STARTING the status names the phase too (`gemma-ft status`).
    code = cli.main(["status", "--workspace", workspace])
    assert code == 0
    wait_state(RunManager(workspace), State.FINISHED, timeout=120)
    until(p, lambda: p.view == "finished" and len(p.dashboard.samples.table.value) > 0, what="the samples")
    html = p.dashboard.samples.table.value
    assert p.dashboard.samples.layout.display is None
    rows = re.findall(r'<tr class="gft-sample-row"><td[^>]*>(\d+)</td><td[^>]*>([^<]*)</td>', html)
    assert [(int(s), prompt) for s, prompt in rows] == [
        (30, "Say hi."), (30, "Count to three."), (20, "Say hi."), (20, "Count to three."),
        (10, "Say hi."), (10, "Count to three.")]

    # The terminal: the same samples, as a log (oldest first).
    capsys.readouterr()
    assert cli.main(["logs", "--stream", "samples", "--workspace", workspace]) == 0
    out = capsys.readouterr().out
    assert out.count("step ") == 6 and out.index("step 10") < out.index("step 30")
    assert "  prompt:     Say hi." in out and "  completion: " in out
    events = contract.read_jsonl(f"{run_dir}/{contract.METRICS_NAME}")
    assert [e["phase"] for e in events if e["event"] == contract.EVENT_PHASE][0] == "model"


def test_status_names_the_phase_while_starting(workspace, sim_env, make_config, capsys):
    sim_env.setenv("GEMMA_FT_SIM_LOAD_TIME", "8")
    m = RunManager(workspace)
    m.start(TrainingConfig.from_dict(make_config(max_steps=5)))
    st = wait_for(lambda: (lambda s: s if s.phase else None)(m.status()), 60, what="a phase in the status")
    assert st.state == State.STARTING and st.phase["phase"] in phases.PHASES
    capsys.readouterr()
    assert cli.main(["status", "--workspace", workspace]) == 0
    assert "phase:      " in capsys.readouterr().out
    assert json.loads(json.dumps(st.to_dict()))["phase"]["event"] == contract.EVENT_PHASE
    m.stop(force=True)
    assert m.status().phase is None  # only while STARTING


def test_default_samples_of_the_simulated_trainer_and_no_samples_at_zero_tokens(workspace, sim_env, make_config):
    m = RunManager(workspace)
    run = m.start(TrainingConfig.from_dict(make_config(max_steps=20, eval_every=10)))
    wait_state(m, State.FINISHED, timeout=60)
    samples = [e for e in contract.read_jsonl(f"{run.run_dir}/{contract.METRICS_NAME}") if e["event"] == "sample"]
    assert [(e["step"], e["prompt"], e["reference"]) for e in samples] == [
        (s, p, r) for s in (10, 20) for p, r in SAMPLE_PROMPTS]
    run = m.start(TrainingConfig.from_dict(make_config(max_steps=20, eval_every=10, sample_tokens=0)))
    wait_state(m, State.FINISHED, timeout=60)
    assert not [e for e in contract.read_jsonl(f"{run.run_dir}/{contract.METRICS_NAME}") if e["event"] == "sample"]


def test_eval_prompts_and_sample_tokens_are_checked_before_anything_starts():
    base = {"dataset": sample_dataset_path()}
    for bad, field, words in (({"eval_prompts": "hi"}, "eval_prompts", "a list of strings"),
                              ({"eval_prompts": ["ok", "  "]}, "eval_prompts", "empty prompt"),
                              ({"eval_prompts": ["p"] * 17}, "eval_prompts", "at most 16"),
                              ({"sample_tokens": 257}, "sample_tokens", "between 0")):
        try:
            TrainingConfig.from_dict({**base, **bad})
        except ConfigError as e:
            assert words in " ".join(e.by_field()[field]), e
        else:
            raise AssertionError(f"{bad} accepted")
    config = TrainingConfig.from_dict({**base, "eval_prompts": ["Say hi."]})
    assert config.eval_prompts == ("Say hi.",) and TrainingConfig.from_dict(json.loads(json.dumps(
        config.to_dict()))) == config


def test_prompts_picked_for_samples():
    """The user's prompts (wrapped as a user turn, no reference), else the eval split's first
    three with their responses; the plain-text format prompts with the first half of a text."""
    cfg = TrainingConfig(eval_prompts=("Say hi.",))
    (own,) = eval_samples.pick_prompts(cfg, [("x", "y")])
    assert own.shown == "Say hi." and own.reference == "" and own.text.startswith("<start_of_turn>user\nSay hi.")
    pairs = [(f"<start_of_turn>user\nq{i}<end_of_turn>\n<start_of_turn>model\n", f"a{i}<end_of_turn>")
             for i in range(5)]
    picked = eval_samples.pick_prompts(TrainingConfig(), pairs)
    assert [(p.shown, p.reference) for p in picked] == [("q0", "a0"), ("q1", "a1"), ("q2", "a2")]
    assert picked[0].text == pairs[0][0]
    (text,) = eval_samples.pick_prompts(TrainingConfig(), [("", "one two three four")])
    assert (text.text, text.reference) == ("one two ", "three four")


def test_phase_descriptions():
    assert phases.describe({"phase": "download", "bytes": 1_500_000_000, "total": 6_000_000_000}) == \
        "downloading the weights: 1.5 GB of 6.0 GB (25%)"
    assert phases.describe({"phase": "data", "tokenized": 1024, "total": 5000}) == \
        "tokenizing the data: 1,024 of 5,000 examples"
    assert phases.describe({"phase": "restore", "step": 40}) == "restoring the checkpoint step_40"
    assert phases.describe({"phase": "compile", "last_seconds": None}).endswith("(first time for these shapes)")


def test_the_progress_bar_counts_the_download_and_the_tokenizing_before_step_1():
    from gemma_ft_widgets.ui.dashboard import Dashboard

    class Starting:
        state, run_name, model, attempt, reason, foreign_host = "STARTING", "r", "gemma3-1b", 1, "", None
        step, max_steps, eval_loss, elapsed_s, devices, loss, lr, tokens_per_s = None, 400, None, 1.0, None, \
            None, None, None
        phase = {"event": contract.EVENT_PHASE, "phase": "download", "bytes": 1_500_000_000, "total": 6_000_000_000}

    d = Dashboard()
    st = Starting()
    d.show_status(st, None)
    assert (d.progress.value, d.progress.max) == (250, 1000) and "downloading <b>25%</b>" in d.progress_label.value
    st.phase = {"event": contract.EVENT_PHASE, "phase": "data", "tokenized": 900, "total": 1000}
    d.show_status(st, None)
    assert d.progress.value == 900 and "tokenizing <b>90%</b>" in d.progress_label.value
    st.phase = {"event": contract.EVENT_PHASE, "phase": "compile", "last_seconds": 12.0}
    d.show_status(st, None)  # no count to show: the steps again
    assert (d.progress.value, d.progress.max) == (0, 400) and "step" in d.progress_label.value
    assert phases.fraction({"phase": "download", "bytes": 5, "total": 0}) is None
    d.close()
