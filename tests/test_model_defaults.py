"""Defaults per model (#13): the learning rate follows the model and method from one table
(models.DEFAULT_LR), in a config without one and in the form, which says what it changed and
keeps what the user typed."""

from __future__ import annotations

import pytest

from gemma_ft_widgets import models
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.ui.form import ConfigForm


def test_a_config_without_a_learning_rate_gets_its_models_default(tmp_path):
    ds = sample_dataset_path()
    lr = lambda **kw: TrainingConfig.from_dict({"dataset": ds, **kw}, check_files=False).learning_rate
    assert lr() == 3e-3 and lr(method="full") == 3e-3  # tiny
    assert lr(model="gemma3-1b") == 2e-4 and lr(model="gemma3-1b", method="full") == 1e-5
    assert lr(model="gemma2-9b-it") == 2e-4
    assert lr(model="gemma3-1b", learning_rate=5e-4) == 5e-4  # given: kept
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "_METADATA").write_text("{}")
    assert lr(model=str(ckpt)) == 3e-3  # a local checkpoint: the family is unknown here
    assert all(models.default_learning_rate(name, "lora") <= 2e-4 for name, s in models.MODELS.items()
               if s.family != "tiny")


@pytest.fixture
def form(tmp_path):
    f = ConfigForm(str(tmp_path / "uploads"), defaults={"dataset": sample_dataset_path()})
    yield f
    f.close()


def test_the_form_follows_the_model_says_so_and_keeps_what_was_typed(form):
    lr = form.fields["learning_rate"]
    assert lr.value == 3e-3 and form.defaults_note.value == ""
    form.fields["model"].value = "gemma3-1b"
    assert lr.value == 2e-4
    assert "Defaults for LoRA on gemma3-1b: learning rate 0.003 → 0.0002" in form.defaults_note.value
    form.fields["method"].value = "full"
    assert lr.value == 1e-5 and "full fine-tuning on gemma3-1b: learning rate 0.0002 → 0.00001" in form.defaults_note.value
    form.fields["model"].value = "gemma3-4b"  # the same default: nothing changes, nothing to say
    assert lr.value == 1e-5 and form.defaults_note.value == ""
    lr.value = 3e-5  # typed
    form.fields["model"].value = "tiny"
    assert lr.value == 3e-5
    assert "kept your learning rate 0.00003 (the default for full fine-tuning on tiny is 0.003)" in form.defaults_note.value
    # Filled from a run's config: its learning rate is a choice, kept on the next change.
    form.set_values({"model": "gemma3-1b", "method": "lora", "learning_rate": 1e-4})
    form.fields["model"].value = "tiny"
    assert lr.value == 1e-4 and "kept your learning rate 0.0001" in form.defaults_note.value
    # Filled with the model's own default: it follows.
    form.set_values({"model": "gemma3-1b", "method": "lora", "learning_rate": 2e-4})
    form.fields["model"].value = "tiny"
    assert lr.value == 3e-3 and "learning rate 0.0002 → 0.003" in form.defaults_note.value
    assert form.valid


def test_a_form_opened_on_a_gemma_starts_at_its_default(tmp_path):
    f = ConfigForm(str(tmp_path / "u"), defaults={"dataset": sample_dataset_path(), "model": "gemma3-1b"})
    try:
        assert f.fields["learning_rate"].value == 2e-4
    finally:
        f.close()
