"""TrainingConfig: one validated, JSON-serialisable description of a run.

Validation happens before anything starts and reports every problem at once, each with the
name of its field, so a form can show it next to that field. No jax here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from typing import Any

from . import datasets, models, webhook_url

METHODS = ("lora", "full")
MAX_STEPS = 10**9
END_LR_FRACTION = 0.1  # the cosine decays to 10% of the peak learning rate (train/optim.py)
MAX_PROCESSES = 1024  # jax.distributed processes of one run (a large TPU pod has hundreds of hosts)
MAX_LISTED_PROBLEMS = 20  # a dataset's problems listed in a ConfigError; the rest are counted
DTYPES = ("auto", "float32", "bfloat16")
REMATS = ("none", "block")  # train/remat.py
QUANTIZATIONS = ("none", "int8", "int4")  # train/quantize.py (LoRA only)


@dataclasses.dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """Every problem of a config, each tied to a field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__("invalid training config:\n" + "\n".join(f"  - {e}" for e in errors))

    def by_field(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in self.errors:
            out.setdefault(e.field, []).append(e.message)
        return out


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    model: str = "tiny"
    dataset: str = ""
    dataset_format: str = "auto"
    method: str = "lora"
    lora_rank: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 10
    batch_size: int = 8
    max_seq_len: int = 128
    max_steps: int = 300
    eval_fraction: float = 0.1
    eval_every: int = 50
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 1
    seed: int = 0
    fsdp: bool = False
    num_processes: int = 1  # trainer processes (jax.distributed), each feeding its own devices
    dtype: str = "auto"
    allow_cpu: bool = False  # train on the CPU even when the machine has a GPU/TPU jax cannot see
    notify: str = ""  # webhook URL: a JSON POST when the run ends (ntfy, Slack, Discord)
    remat: str = "none"  # "block": recompute each block's activations in the backward pass
    quantization: str = "none"  # LoRA's frozen base held as int8/int4 with per-channel scales
    # 0: the cosine decay spans max_steps. N: it spans N steps, then the learning rate holds at
    # its final value (`resume --max-steps` sets it to extend a finished run; see train/optim.py).
    schedule_steps: int = 0

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], check_files: bool = True) -> "TrainingConfig":
        """Validate a plain dict (e.g. parsed JSON). Raises ConfigError with all problems."""
        if not isinstance(data, dict):
            raise ConfigError([FieldError("config", f"expected a JSON object, got {type(data).__name__}")])
        errors = []
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                hint = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
                errors.append(FieldError(key, "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else "")))
        kwargs, type_errors = _coerce({k: v for k, v in data.items() if k in names})
        errors += type_errors
        if "warmup_steps" not in data and isinstance(kwargs.get("max_steps"), int):
            # The default warmup (10) would refuse a short run: at most a tenth of it instead.
            kwargs["warmup_steps"] = max(0, min(cls.warmup_steps, kwargs["max_steps"] // 10))
        config = cls(**kwargs)
        errors += config.problems(check_files=check_files, skip={e.field for e in type_errors})
        if errors:
            raise ConfigError(errors)
        return config._resolved()

    @classmethod
    def from_json_file(cls, path: str, check_files: bool = True) -> "TrainingConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError([FieldError("config", f"file not found: {path}")]) from None
        except (OSError, ValueError) as e:
            raise ConfigError([FieldError("config", f"cannot read {path}: {e}")]) from None
        base = os.path.dirname(os.path.abspath(path))
        if isinstance(data, dict):  # relative paths in a config file are relative to the file
            if isinstance(data.get("dataset"), str) and data["dataset"]:
                data = dict(data, dataset=os.path.join(base, os.path.expanduser(data["dataset"])))
            model = data.get("model")
            if isinstance(model, str) and model not in models.MODELS and _looks_like_path(model):
                data = dict(data, model=os.path.normpath(os.path.join(base, os.path.expanduser(model))))
        return cls.from_dict(data, check_files=check_files)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainingConfig":
        """A validated copy with some fields changed."""
        return TrainingConfig.from_dict({**self.to_dict(), **changes})

    # -- validation -------------------------------------------------------------------------
    def problems(self, check_files: bool = True, skip: set[str] = frozenset()) -> list[FieldError]:
        """Every problem of this config (empty when it is valid)."""
        errs: list[FieldError] = []

        def bad(field, msg):
            if field not in skip:
                errs.append(FieldError(field, msg))

        for field in ("learning_rate",):
            if not self.learning_rate > 0:
                bad(field, f"must be > 0, got {self.learning_rate}")
        for field in ("batch_size", "max_steps", "max_seq_len", "lora_rank", "eval_every",
                      "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, field)
            if value <= 0:
                bad(field, f"must be a positive integer, got {value}")
        if not 1 <= self.num_processes <= MAX_PROCESSES:
            bad("num_processes", f"must be between 1 and {MAX_PROCESSES}, got {self.num_processes}")
        elif self.batch_size > 0 and self.batch_size % self.num_processes:
            bad("batch_size", f"must be a multiple of num_processes ({self.num_processes}): each process "
                              f"feeds an equal share of the global batch; got {self.batch_size}")
        if self.max_steps > MAX_STEPS:
            bad("max_steps", f"must be at most {MAX_STEPS:,} (the optimizer counts steps in int32), got {self.max_steps:,}")
        if self.schedule_steps and not max(self.warmup_steps, 1) <= self.schedule_steps <= self.max_steps:
            bad("schedule_steps", f"must be 0 or between warmup_steps and max_steps ({self.max_steps}), "
                                  f"got {self.schedule_steps}")
        if self.warmup_steps < 0:
            bad("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        elif self.warmup_steps > self.max_steps > 0:
            bad("warmup_steps", f"must not exceed max_steps ({self.max_steps}): the learning rate would still be "
                                f"rising when training ends; use at most {self.max_steps}, or leave it out "
                                "(a tenth of max_steps, at most 10)")
        if not 0 <= self.eval_fraction < 1:
            bad("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")
        if self.method not in METHODS:
            bad("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.notify and webhook_url.problem(self.notify):
            bad("notify", webhook_url.problem(self.notify))
        if self.dtype not in DTYPES:
            bad("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.remat not in REMATS:
            bad("remat", f"must be one of {', '.join(REMATS)}, got {self.remat!r}")
        if self.quantization not in QUANTIZATIONS:
            bad("quantization", f"must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        elif self.quantization != "none" and self.method != "lora":
            bad("quantization", "quantizes the frozen base of LoRA; use method 'lora' or quantization 'none'")
        if self.dataset_format not in ("auto",) + datasets.FORMATS:
            bad("dataset_format", f"must be auto or one of {', '.join(datasets.FORMATS)}, "
                                  f"got {self.dataset_format!r}")
        if "model" not in skip:
            errs += _model_problems(self.model)
            spec = models.MODELS.get(self.model)
            if spec is not None and spec.family == "gemma4" and self.quantization != "none":
                bad("quantization", "is not available for Gemma 4 models yet (the gemma library's int "
                                    "layers do not replace Gemma 4's); use 'none'")
        if "dataset" not in skip and "dataset_format" not in skip:
            errs += _dataset_problems(self, check_files)
        return errs

    def check(self, check_files: bool = True) -> "TrainingConfig":
        errors = self.problems(check_files=check_files)
        if errors:
            raise ConfigError(errors)
        return self._resolved()

    # -- helpers ----------------------------------------------------------------------------
    def _resolved(self) -> "TrainingConfig":
        changes = {}
        if self.dataset:
            changes["dataset"] = os.path.abspath(os.path.expanduser(self.dataset))
        if self.model not in models.MODELS:
            changes["model"] = os.path.abspath(os.path.expanduser(self.model))
        return dataclasses.replace(self, **changes)

    def model_spec(self) -> models.ModelSpec | None:
        """The table entry, or None for a local checkpoint directory."""
        return models.MODELS.get(self.model)

    def run_name_prefix(self) -> str:
        """A filesystem-safe prefix for run folders: the model name or checkpoint's basename."""
        base = self.model if self.model in models.MODELS else os.path.basename(os.path.normpath(self.model))
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
        return safe or "run"


def _coerce(data: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Check each value's type; ints are accepted for float fields, nothing else is guessed."""
    out, errors = {}, []
    for f in dataclasses.fields(TrainingConfig):
        if f.name not in data:
            continue
        value, kind = data[f.name], f.type
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            errors.append(FieldError(f.name, f"expected {_KIND_NAMES[kind]}, got {value!r} ({type(value).__name__})"))
            continue
        if kind == "float" and not math.isfinite(value):  # JSON's NaN / Infinity extensions
            errors.append(FieldError(f.name, f"must be a finite number, got {value!r}"))
            continue
        out[f.name] = float(value) if kind == "float" else value
    return out, errors


_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _looks_like_path(model: str) -> bool:
    return os.sep in model or model.startswith((".", "~"))


def _model_problems(model: str) -> list[FieldError]:
    if model in models.MODELS:
        return []
    if not model:
        return [FieldError("model", "no model given")]
    looks_like_path = _looks_like_path(model)
    path = os.path.abspath(os.path.expanduser(model))
    if looks_like_path or os.path.exists(path):
        if not os.path.isdir(path):
            return [FieldError("model", f"checkpoint directory not found: {path}")]
        if not models.is_local_checkpoint(path):
            return [FieldError("model", f"{path} does not look like a checkpoint directory "
                                        "(no orbax metadata or tokenizer.model inside)")]
        return []
    hint = models.closest_model(model)
    msg = f"unknown model {model!r}" + (f"; did you mean {hint!r}?" if hint else "")
    return [FieldError("model", msg + f" (known: {', '.join(models.MODELS)})")]


def _dataset_problems(config: TrainingConfig, check_files: bool) -> list[FieldError]:
    if not config.dataset:
        return [FieldError("dataset", "no dataset file given")]
    if not check_files:
        return []
    path = os.path.abspath(os.path.expanduser(config.dataset))
    problem = datasets.check_readable(path)
    if problem:
        return [FieldError("dataset", problem)]
    try:
        records, _ = datasets.load_records(path, config.dataset_format)
    except datasets.DatasetError as e:  # 200,000 bad lines must not print 17 MB: the first ones
        shown = [FieldError("dataset", p) for p in e.problems[:MAX_LISTED_PROBLEMS]]
        more = len(e.problems) - len(shown)
        return shown + ([FieldError("dataset", f"... and {more:,} more problem(s) in the file")] if more else [])
    if config.batch_size > len(records):
        return [FieldError("batch_size", f"is larger than the dataset ({len(records)} examples)")]
    return []


def sample_dataset_path() -> str:
    """The small dataset the package ships for the quickstart."""
    from importlib import resources

    return str(resources.files("gemma_ft_widgets") / "data" / "sample_dataset.jsonl")


def demo_config(**overrides) -> TrainingConfig:
    """The README's main job: the form's defaults (LoRA on `tiny`, whose packaged pretrained
    base makes LoRA learn as on a real Gemma) on the sample dataset."""
    return TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path(), **overrides})
