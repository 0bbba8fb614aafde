"""The config form: values <-> TrainingConfig, errors next to their fields, upload, preview."""

from __future__ import annotations

import datetime
import json
import os

import pytest

from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.ui import form as form_mod
from gemma_ft_widgets.ui.form import ConfigForm


@pytest.fixture
def form(tmp_path):
    f = ConfigForm(str(tmp_path / "uploads"), defaults={"dataset": sample_dataset_path()})
    yield f
    f.close()


def test_valid_defaults_enable_start_and_round_trip(form):
    assert form.valid and not form.start_button.disabled
    assert all(v.value == "" for v in form.errors.values())
    config = TrainingConfig.from_dict(form.values())
    assert config.to_dict() == {**TrainingConfig().to_dict(), "dataset": sample_dataset_path()}
    assert form.config is not None and form.config.dataset == sample_dataset_path()


def test_every_config_field_has_a_widget_and_an_error_slot(form):
    names = set(TrainingConfig().to_dict())
    assert set(form.fields) == names and set(form.errors) == names


def test_the_form_is_built_from_the_configs_field_metadata(form):
    """Labels, choices and tooltips come from TrainingConfig (one schema): every choice the form
    offers is one the config accepts, and every value the config accepts is offered."""
    import dataclasses

    from gemma_ft_widgets.config import ConfigError, field_info

    for f in dataclasses.fields(TrainingConfig):
        info, widget = field_info(f.name), form.fields[f.name]
        assert widget.description == info.label and widget.tooltip == info.help and info.label, f.name
        if info.choices:
            assert [value for _, value in widget.options] == [value for value, _ in info.choices], f.name
            for value, _ in info.choices:
                other = "lora" if f.name == "quantization" else None  # int8/int4 need LoRA
                try:
                    TrainingConfig.from_dict({**form.values(), f.name: value, **({"method": other} if other else {})})
                except ConfigError as e:
                    assert f.name not in e.by_field(), (f.name, value, e)
            with pytest.raises(ConfigError) as bad:
                TrainingConfig.from_dict({**form.values(), f.name: "no-such-choice"})
            assert f.name in bad.value.by_field()


def test_errors_appear_next_to_their_own_fields(form):
    form.fields["learning_rate"].value = -1.0
    form.fields["batch_size"].value = 0
    form.fields["warmup_steps"].value = 500  # >= max_steps (300)
    assert not form.valid and form.start_button.disabled
    assert "must be &gt; 0" in form.errors["learning_rate"].value
    assert "positive integer" in form.errors["batch_size"].value
    assert "max_steps" in form.errors["warmup_steps"].value
    assert form.errors["max_steps"].value == "" and form.errors["dataset"].value == ""
    assert "fix the errors" in form.estimate_line.value
    form.fields["learning_rate"].value = 1e-3
    form.fields["batch_size"].value = 4
    form.fields["warmup_steps"].value = 10
    assert form.valid and not form.start_button.disabled
    assert all(v.value == "" for v in form.errors.values())


def test_dataset_problems_name_the_lines(form, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\nnot json\n{"prompt": "c"}\n')
    form.fields["dataset"].value = str(bad)
    html = form.errors["dataset"].value
    assert "bad.jsonl line 2" in html and "bad.jsonl line 3" in html
    assert not form.valid and form.start_button.disabled
    form.fields["dataset"].value = str(tmp_path / "missing.jsonl")
    assert "file not found" in form.errors["dataset"].value
    form.fields["dataset"].value = ""
    assert "no dataset file given" in form.errors["dataset"].value


def test_batch_larger_than_dataset_is_a_batch_size_error(form, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(3)))
    form.fields["dataset"].value = str(small)
    assert "larger than the dataset (3 examples)" in form.errors["batch_size"].value
    form.fields["batch_size"].value = 2
    assert form.valid


def test_dataset_is_read_once_per_file_version(form, tmp_path, monkeypatch):
    from gemma_ft_widgets import datasets

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(20)))
    calls = []
    real = datasets.load_records
    monkeypatch.setattr(datasets, "load_records", lambda *a, **k: calls.append(a) or real(*a, **k))
    form.fields["dataset"].value = str(path)
    for lr in (1e-3, 2e-3, 3e-3):
        form.fields["learning_rate"].value = lr
    assert len(calls) == 1
    with open(path, "a") as f:
        f.write(json.dumps({"text": "more"}) + "\n")
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    form.validate()
    assert len(calls) == 2


def test_preview_shows_format_rows_histogram_and_truncation(form):
    p = form.preview
    assert p.layout.display is None
    assert "prompt_response" in p.summary.value and "auto-detected" in p.summary.value
    assert "349" in p.summary.value
    assert "&lt;start_of_turn&gt;user" in p.table.value  # rendered as the model sees it
    assert p.tokenizer_label == "tokenizer: tiny_tokenizer.model"
    assert len(p.lengths) == 349 and sum(p.bars.y) == 349
    assert "0 of 349 examples (0.0%)" in p.truncation.value
    form.fields["max_seq_len"].value = 40
    share = sum(n > 40 for n in p.lengths) / 349
    assert f"({share:.1%})" in p.truncation.value and share > 0
    assert list(p.cut_line.x) == [40, 40]


def test_preview_is_labelled_approximate_without_a_tokenizer(form, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    form.fields["model"].value = "gemma3-1b"
    assert form.preview.tokenizer_label == "approximate: chars/4"
    assert "approximate: chars/4" in form.preview.truncation.value


def test_method_full_disables_lora_rank(form):
    form.fields["method"].value = "full"
    assert form.fields["lora_rank"].disabled
    form.fields["method"].value = "lora"
    assert not form.fields["lora_rank"].disabled


def test_model_dropdown_lists_parameter_counts(form):
    labels = [label for label, _ in form.fields["model"].options]
    assert "tiny (107k)" in labels and any("gemma3-1b (" in label for label in labels)


def test_estimate_line(form):
    try:
        import gemma_ft_widgets.estimate  # noqa: F401
    except ImportError:
        assert "not available" in form.estimate_line.value
    else:
        assert form.estimate_line.value.startswith("<b>Estimate:</b>")
        assert "accelerator memory" in form.estimate_line.value and "for 300 steps" in form.estimate_line.value
        form.fields["max_steps"].value = 1000
        assert "for 1000 steps" in form.estimate_line.value


def test_upload_copies_into_the_workspace_without_overwriting(form, tmp_path):
    content = b'{"text": "hello"}\n' * 10
    for expected in ("mine.jsonl", "mine-2.jsonl"):
        form.upload.value = ({"name": "mine.jsonl", "type": "application/json", "size": len(content),
                              "content": memoryview(content),
                              "last_modified": datetime.datetime.now(datetime.UTC)},)
        path = tmp_path / "uploads" / expected
        assert path.read_bytes() == content
        assert form.fields["dataset"].value == str(path)
        # "Upload (1)" after an upload, not "Upload (0)" (#20); the bytes are not kept
        assert [(f["name"], len(f["content"])) for f in form.upload.value] == [("mine.jsonl", 0)]
    assert "Uploaded to" in form.message.value
    form.fields["batch_size"].value = 4
    assert form.valid


def test_upload_names_are_sanitised(tmp_path):
    assert form_mod.unique_path(str(tmp_path), "../../etc/passwd") == str(tmp_path / "passwd")
    assert form_mod.unique_path(str(tmp_path), "my data (1).csv") == str(tmp_path / "my_data_1_.csv")


def test_set_values_prefills_and_keeps_a_local_model(form, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer.model").write_bytes(b"x")
    form.set_values({"model": str(ckpt), "max_steps": 77, "learning_rate": 1e-4, "unknown": 1})
    assert form.fields["model"].value == str(ckpt) and form.fields["max_steps"].value == 77
    assert form.valid, {k: v.value for k, v in form.errors.items() if v.value}


def test_start_is_blocked_by_an_active_run(form):
    started = []
    form.on_start = started.append
    form.active_run = "tiny-20250101-000000"
    assert form.start_button.disabled and "is active" in form.blocked_note.value
    form.start_button.click()
    assert started == []
    form.active_run = ""
    assert not form.start_button.disabled and form.blocked_note.value == ""
    form.start_button.click()
    assert len(started) == 1 and isinstance(started[0], TrainingConfig)


def test_a_fraction_in_a_whole_number_field_is_refused_as_typed(form):
    """Issue #20: "1.5" typed into Batch size became 15 (IntText drops the "."). The field
    keeps 1.5 and says why it is refused; a whole number is an int again."""
    form.fields["batch_size"].value = 1.5
    assert form.fields["batch_size"].value == 1.5 and not form.valid
    assert "expected an integer, got 1.5" in form.errors["batch_size"].value
    assert form.start_button.disabled
    form.fields["batch_size"].value = 4.0
    assert form.fields["batch_size"].value == 4 and isinstance(form.fields["batch_size"].value, int)
    assert form.valid and form.config.batch_size == 4


def test_a_learning_rate_like_10_is_warned_about_but_allowed(form):
    """Issue #20: a learning rate of 10 was accepted with no warning."""
    form.fields["learning_rate"].value = 10
    assert "very high" in form.errors["learning_rate"].value and "gft-field-warning" in form.errors["learning_rate"].value
    assert form.valid  # a warning, not an error: the user may mean it
    form.fields["learning_rate"].value = 3e-4
    assert form.errors["learning_rate"].value == ""
