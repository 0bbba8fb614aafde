"""TrainingConfig validation: one test per kind of bad input, all errors at once."""

import json
import os

import pytest

from gemma_ft_widgets.config import ConfigError, TrainingConfig, demo_config, sample_dataset_path


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def errors_of(data):
    with pytest.raises(ConfigError) as info:
        TrainingConfig.from_dict(data)
    return info.value.by_field()


def test_valid_config_round_trips_through_json(dataset):
    config = TrainingConfig.from_dict({"model": "tiny", "dataset": dataset, "max_steps": 20})
    again = TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert os.path.isabs(config.dataset)


@pytest.mark.parametrize("field,value", [
    ("learning_rate", 0), ("learning_rate", -1e-3),
    ("batch_size", 0), ("batch_size", -4),
    ("max_steps", 0), ("max_steps", -1),
])
def test_non_positive_numbers_are_rejected(dataset, field, value):
    errs = errors_of({"dataset": dataset, field: value})
    assert field in errs and ("> 0" in errs[field][0] or "positive" in errs[field][0])


@pytest.mark.parametrize("field,value,expected", [
    ("max_steps", "many", "integer"),
    ("learning_rate", "fast", "number"),
    ("batch_size", 2.5, "integer"),
    ("fsdp", "yes", "true or false"),
    ("max_steps", True, "integer"),
])
def test_wrong_types_are_named(dataset, field, value, expected):
    errs = errors_of({"dataset": dataset, field: value})
    assert expected in errs[field][0] and repr(value) in errs[field][0]


def test_unknown_model_suggests_the_closest(dataset):
    errs = errors_of({"dataset": dataset, "model": "gemma3-1bb"})
    assert "unknown model 'gemma3-1bb'" in errs["model"][0]
    assert "did you mean 'gemma3-1b'" in errs["model"][0]


def test_unknown_key_suggests_the_closest_field(dataset):
    errs = errors_of({"dataset": dataset, "learning_rat": 0.1})
    assert "did you mean 'learning_rate'" in errs["learning_rat"][0]


def test_missing_dataset_file(tmp_path):
    errs = errors_of({"dataset": str(tmp_path / "nope.jsonl")})
    assert "file not found" in errs["dataset"][0]


def test_unreadable_dataset_file(dataset):
    os.chmod(dataset, 0)
    if os.geteuid() != 0:
        errs = errors_of({"dataset": dataset})
        assert "not readable" in errs["dataset"][0]
        return
    # Root reads anything: validate in a child that dropped the capabilities that allow it.
    import shutil
    import subprocess
    import sys

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
    code = ("from gemma_ft_widgets.config import *\n"
            "try: TrainingConfig.from_dict({'dataset': %r})\n"
            "except ConfigError as e: print(e.by_field()['dataset'][0])" % dataset)
    caps = "-dac_override,-dac_read_search"
    out = subprocess.run(["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}",
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "not readable" in out.stdout, out.stdout + out.stderr


def test_unreadable_dataset_is_a_directory(tmp_path):
    errs = errors_of({"dataset": str(tmp_path)})
    assert "directory" in errs["dataset"][0]


def test_invalid_json_lines_are_reported_by_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{oops\n\n{"prompt": "c", "response": "d"}\n[1]\n')
    errs = errors_of({"dataset": str(path), "batch_size": 1})
    assert any("bad.jsonl line 2: not valid JSON" in m for m in errs["dataset"])
    assert any("bad.jsonl line 5:" in m for m in errs["dataset"])


def test_lines_missing_their_format_fields_are_reported(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "only"}\n')
    errs = errors_of({"dataset": str(path), "batch_size": 1})
    assert errs["dataset"] == ["mixed.jsonl line 2: missing field(s) 'response' for format 'prompt_response'; "
                               "found key(s) 'prompt'"]


def test_a_file_of_unknown_columns_names_the_keys_it_found(tmp_path):
    """Issue #20: a column error lists the keys the line has (a renamed column is then obvious)."""
    path = tmp_path / "renamed.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n')
    errs = errors_of({"dataset": str(path), "batch_size": 1})
    assert errs["dataset"] == ["renamed.jsonl line 1: cannot tell the format: expected 'text', 'prompt'+'response', "
                               "'instruction'+'output' or 'messages'; found key(s) 'question', 'answer'"]


def test_named_format_that_does_not_fit(dataset):
    errs = errors_of({"dataset": dataset, "dataset_format": "chat"})
    assert "line 1: missing field(s) 'messages'" in errs["dataset"][0]


def test_every_error_is_reported_at_once(tmp_path):
    errs = errors_of({"model": "gemma9", "dataset": str(tmp_path / "missing.jsonl"),
                      "learning_rate": -1, "batch_size": "eight", "max_steps": 0, "colour": "red"})
    assert set(errs) >= {"model", "dataset", "learning_rate", "batch_size", "max_steps", "colour"}


def test_local_checkpoint_directory_is_accepted_as_model(tmp_path, dataset):
    ckpt = tmp_path / "my_ckpt"
    ckpt.mkdir()
    (ckpt / "_METADATA").write_text("{}")
    config = TrainingConfig.from_dict({"model": str(ckpt), "dataset": dataset})
    assert config.model == str(ckpt) and config.run_name_prefix() == "my_ckpt"
    errs = errors_of({"model": str(tmp_path / "empty_dir_missing"), "dataset": dataset})
    assert "checkpoint directory not found" in errs["model"][0]


def test_config_file_paths_are_relative_to_the_file(tmp_path, dataset):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"dataset": os.path.basename(dataset), "max_steps": 5, "warmup_steps": 2}))
    assert TrainingConfig.from_json_file(str(cfg)).dataset == dataset
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        TrainingConfig.from_json_file(str(tmp_path / "broken.json"))


def test_sample_dataset_and_demo_config_are_valid():
    assert os.path.exists(sample_dataset_path())
    config = demo_config()
    assert config.model == "tiny" and config.max_steps > 0
    # `gemma-ft demo` runs the panel form's defaults: LoRA, as with a real Gemma.
    assert config.to_dict() == {**TrainingConfig().to_dict(), "dataset": sample_dataset_path()}
    assert config.method == "lora"


def test_lora_on_gemma4_is_accepted_and_its_quantization_refused(dataset):
    from gemma_ft_widgets import models

    if "gemma4-e2b" not in models.MODELS:
        pytest.skip("the installed gemma has no Gemma 4")
    assert TrainingConfig.from_dict({"dataset": dataset, "model": "gemma4-e2b", "method": "lora"}).method == "lora"
    errs = errors_of({"dataset": dataset, "model": "gemma4-e2b", "method": "lora", "quantization": "int8"})
    assert "not available for Gemma 4" in errs["quantization"][0]


def test_an_unknown_dataset_format_is_a_field_error_not_a_crash():
    """A misspelt format used to reach the dataset reader, whose KeyError ended `gemma-ft start`
    with a traceback."""
    with pytest.raises(ConfigError) as e:
        TrainingConfig.from_dict({"dataset": sample_dataset_path(), "dataset_format": "jsonl2"})
    assert "must be auto or one of" in e.value.by_field()["dataset_format"][0]
