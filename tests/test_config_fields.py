"""The config fields users expect (LoRA alpha/dropout, weight decay, accumulation, schedule,
clipping, run name, tags): validation, old configs, the form's tooltips from the fields' help,
and name/tags in the run folder, `status` and `list` (simulated trainer). Their effect on
training is tested in test_train_fields.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gemma_ft_widgets import cli, contract
from gemma_ft_widgets.config import ConfigError, TrainingConfig, field_help, sample_dataset_path
from gemma_ft_widgets.runs.state import State
from gemma_ft_widgets.train import simulated as simulated_trainer
from gemma_ft_widgets.ui.form import ConfigForm

from .conftest import wait_state

NEW = ("lora_alpha", "lora_dropout", "weight_decay", "grad_accum_steps", "lr_schedule", "max_grad_norm",
       "run_name", "tags")


def errors_of(**changes) -> dict[str, list[str]]:
    try:
        TrainingConfig.from_dict({"dataset": "x.jsonl", **changes}, check_files=False)
    except ConfigError as e:
        return e.by_field()
    return {}


@pytest.mark.parametrize("field,value,says", [
    ("lora_alpha", 0, "must be > 0"),
    ("lora_dropout", 0.95, "between 0 and 0.9"),
    ("weight_decay", -0.1, "between 0 and 1"),
    ("grad_accum_steps", 0, "between 1 and 1024"),
    ("lr_schedule", "exponential", "cosine, linear, constant"),
    ("max_grad_norm", -1, "0 turns clipping off"),
    ("run_name", "a/b", "found '/'"),
    ("run_name", "x" * 65, "at most 64"),
    ("tags", "ok, " + "t" * 40, "at most 32"),
    ("grad_accum_steps", 1.5, "expected an integer"),
])
def test_each_new_field_refuses_bad_values_with_a_clear_error(field, value, says):
    errs = errors_of(**{field: value})
    assert list(errs) == [field] and says in errs[field][0], errs


def test_old_configs_without_the_new_fields_load_as_they_trained():
    old = {"model": "tiny", "dataset": "x.jsonl", "lora_rank": 16, "learning_rate": 1e-3, "max_steps": 100}
    cfg = TrainingConfig.from_dict(old, check_files=False)
    assert cfg.lora_alpha == 16.0  # scale 1: the adapters' update as before lora_alpha existed
    assert (cfg.lr_schedule, cfg.weight_decay, cfg.max_grad_norm, cfg.grad_accum_steps, cfg.lora_dropout) == (
        "cosine", 0.01, 1.0, 1, 0.0)  # the values the trainer hard-coded before
    assert (cfg.run_name, cfg.tags, cfg.tag_list()) == ("", "", [])
    good = TrainingConfig.from_dict({**old, "run_name": "my run", "tags": " a,b , a,, c"}, check_files=False)
    assert good.tag_list() == ["a", "b", "c"] and good.run_name_prefix() == "my-run"


def test_every_field_has_help_and_the_form_shows_it_as_a_tooltip(tmp_path):
    form = ConfigForm(str(tmp_path / "up"), defaults={"dataset": sample_dataset_path()})
    try:
        for f in dataclasses.fields(TrainingConfig):
            assert len(f.metadata.get("help", "")) > 20, f.name
            assert form.fields[f.name].tooltip == field_help(f.name), f.name
        assert form.valid
        form.fields["grad_accum_steps"].value = 0
        form.fields["lr_schedule"].value = "linear"
        form.fields["tags"].value = "baseline, x"
        assert not form.valid and "between 1 and 1024" in form.errors["grad_accum_steps"].value
        form.fields["grad_accum_steps"].value = 4
        assert form.valid and form.config.grad_accum_steps == 4 and form.config.lr_schedule == "linear"
        assert form.config.tag_list() == ["baseline", "x"]
        form.fields["method"].value = "full"
        assert all(form.fields[n].disabled for n in ("lora_rank", "lora_alpha", "lora_dropout"))
        form.set_values({"lora_rank": 16})  # an old run's config: alpha follows its rank
        assert form.fields["lora_alpha"].value == 16.0
    finally:
        form.close()


def test_the_run_name_names_the_folder_and_tags_show_in_status_and_list(manager, make_config, capsys):
    run = manager.start(make_config(max_steps=3, run_name="lr sweep 1", tags="baseline, tiny",
                                    grad_accum_steps=2, lr_schedule="linear", learning_rate=1e-3))
    assert run.name.startswith("lr-sweep-1")
    st = wait_state(manager, {State.FINISHED}, run.run_dir, timeout=60)
    assert st.tags == ["baseline", "tiny"] and st.to_dict()["tags"] == ["baseline", "tiny"]
    assert cli.main(["status", run.name, "--workspace", manager.workspace]) == 0
    assert "tags:       baseline, tiny" in capsys.readouterr().out
    assert cli.main(["list", "--workspace", manager.workspace]) == 0
    assert "[baseline, tiny]" in capsys.readouterr().out
    # The simulated trainer follows the schedule and logs grad_norm, as the real one does.
    cfg = json.load(open(f"{run.run_dir}/{contract.CONFIG_NAME}"))
    steps = [e for e in contract.read_jsonl(f"{run.run_dir}/{contract.METRICS_NAME}") if e["event"] == "step"]
    assert [e["lr"] for e in steps] == pytest.approx([simulated_trainer.lr_at(s, cfg) for s in (1, 2, 3)])
    assert steps[0]["lr"] > steps[-1]["lr"] and all(e["grad_norm"] > 0 for e in steps)


def test_the_estimate_counts_accumulated_micro_batches():
    from gemma_ft_widgets.estimate import estimate

    one = estimate({"model": "gemma3-1b", "batch_size": 4})
    four = estimate({"model": "gemma3-1b", "batch_size": 4, "grad_accum_steps": 4})
    assert four.tokens_per_step == 4 * one.tokens_per_step and four.step_time_s == pytest.approx(4 * one.step_time_s)
    assert four.activations_bytes == one.activations_bytes  # one micro-batch's
    assert four.gradients_bytes == 2 * one.gradients_bytes  # plus the running sum
