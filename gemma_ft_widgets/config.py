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
from collections.abc import Iterator
from typing import Any

from . import datasets, models, webhook_url

METHODS = ("lora", "full")
MAX_STEPS = 10**9
END_LR_FRACTION = 0.1  # cosine and linear decay to 10% of the peak learning rate (train/optim.py)
LR_SCHEDULES = ("cosine", "linear", "constant")  # each after a linear warmup (train/optim.py)
MAX_GRAD_ACCUM = 1024
MAX_LORA_DROPOUT = 0.9
MAX_RUN_NAME = 64
MAX_TAGS, MAX_TAG_LEN = 16, 32
MAX_PROCESSES = 1024  # jax.distributed processes of one run (a large TPU pod has hundreds of hosts)
MAX_LISTED_PROBLEMS = 20  # a dataset's problems listed in a ConfigError; the rest are counted
DTYPES = ("auto", "float32", "bfloat16")
REMATS = ("none", "block")  # train/remat.py
QUANTIZATIONS = ("none", "int8", "int4")  # train/quantize.py (LoRA only)
EVAL_SAMPLES = 3  # eval-split prompts sampled at each eval when eval_prompts is empty
MAX_SAMPLE_TOKENS = 256  # a sample's cost grows with its length: it stays a small share of training
MAX_EVAL_PROMPTS = 16


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One problem of a config, tied to the field a form shows it beside."""

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
        """The messages grouped by field."""
        out: dict[str, list[str]] = {}
        for e in self.errors:
            out.setdefault(e.field, []).append(e.message)
        return out


def _field(default, help: str, label: str, choices: tuple[tuple[str, str], ...] = (), widget: str = ""):
    """A TrainingConfig field with what the form is built from: its help text (the tooltip), its
    label, its choices as (value, shown as) pairs, and a widget for the few a type cannot tell
    ("path", "secret", "model")."""
    return dataclasses.field(default=default, metadata={"help": help, "label": label, "choices": choices,
                                                        "widget": widget})


def _shown(values: tuple[str, ...], *shown: str) -> tuple[tuple[str, str], ...]:
    """Choices as (value, how the form shows it); a value shown as itself when not named."""
    return tuple((v, shown[i] if i < len(shown) else v) for i, v in enumerate(values))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a training run, validated by `problems()`; saved as config.json."""

    model: str = _field("tiny", "A model name from the table (gemma3-270m, gemma3-1b, ...) or a local "
                                "checkpoint directory.", "Model", widget="model")
    dataset: str = _field("", "A .jsonl or .csv file of training examples (relative paths in a config file "
                              "are relative to the file).", "Dataset file", widget="path")
    dataset_format: str = _field("auto", "How to read the examples: auto detects it from the first records.", "Format", choices=_shown(("auto",) + datasets.FORMATS))
    method: str = _field("lora", "lora trains small adapters on a frozen base; full trains every weight.", "Method", choices=_shown(METHODS, "LoRA", "full fine-tuning"))
    lora_rank: int = _field(8, "The rank of each LoRA adapter: more capacity, more memory.", "LoRA rank")
    # Left out of a config, lora_alpha equals lora_rank (scale 1: how runs trained before the field).
    lora_alpha: float = _field(8.0, "LoRA's update is scaled by alpha / rank (as in PEFT); "
                                    "left out of a config file, it equals the rank.", "LoRA alpha")
    lora_dropout: float = _field(0.0, "Dropout on each LoRA adapter's input during training (not at eval), "
                                      "0 to 0.9.", "LoRA dropout")
    learning_rate: float = _field(3e-3, "The peak learning rate (AdamW), reached after the warmup. "
                                           "Left out: the model's and method's default (LoRA 2e-4, full 1e-5 "
                                           "on Gemma; 3e-3 on tiny).", "Learning rate")
    lr_schedule: str = _field("cosine", "After the warmup: cosine or linear decay to a tenth of the peak at "
                                        "the last step, or constant.", "LR schedule", choices=_shown(LR_SCHEDULES))
    warmup_steps: int = _field(10, "Steps of linear warmup from 0 to the learning rate "
                                   "(left out: a tenth of max_steps, at most 10).", "Warmup steps")
    weight_decay: float = _field(0.01, "AdamW's decoupled weight decay on matrices (not norms or biases); 0 is off.", "Weight decay")
    max_grad_norm: float = _field(1.0, "Clip the gradient to this global norm before each update; 0 is off.", "Clip gradient norm (0: off)")
    batch_size: int = _field(8, "Examples per forward/backward pass (the micro-batch).", "Batch size")
    grad_accum_steps: int = _field(1, "Micro-batches whose gradients are summed into one update: "
                                      "an effective batch of batch_size × this, at batch_size's memory.", "Gradient accumulation")
    max_seq_len: int = _field(128, "Tokens per example; longer ones are cut.", "Sequence length")
    max_steps: int = _field(300, "Optimizer updates to train for.", "Steps")
    eval_fraction: float = _field(0.1, "The share of examples held out for the eval loss.", "Eval fraction")
    eval_every: int = _field(50, "Compute the eval loss every this many steps (and at the end).", "Eval every (steps)")
    checkpoint_every: int = _field(100, "Save a checkpoint every this many steps (and at the end).", "Checkpoint every")
    keep_checkpoints: int = _field(3, "The newest checkpoints kept; older ones are deleted.", "Keep checkpoints")
    log_every: int = _field(1, "Log the loss every this many steps.", "Log every (steps)")
    seed: int = _field(0, "Seeds the data order, the adapters' init and dropout.", "Seed")
    fsdp: bool = _field(False, "Shard the parameters (and in full fine-tuning the optimizer state) over "
                               "the devices, for models that do not fit on one.", "FSDP (shard params)")
    num_processes: int = _field(1, "Trainer processes (jax.distributed), each feeding its own devices.", "Trainer processes")
    dtype: str = _field("auto", "The weights' dtype: auto is bfloat16 on GPU/TPU and float32 on CPU.", "dtype", choices=_shown(DTYPES))
    allow_cpu: bool = _field(False, "Train on the CPU even when the machine has a GPU/TPU jax cannot see.", "Train on CPU even if a GPU/TPU is present")
    notify: str = _field("", "A webhook URL: a JSON POST when the run ends (ntfy, Slack, Discord).", "Notify URL (webhook)", widget="secret")
    remat: str = _field("none", "block recomputes each block's activations in the backward pass: "
                                "less memory, about a third more compute.", "Recompute activations", choices=_shown(REMATS, "no (fastest)", "per block (less memory)"))
    quantization: str = _field("none", "LoRA's frozen base held as int8/int4 with per-channel scales "
                                       "(QLoRA-style): less memory.", "Base weights (LoRA)", choices=_shown(QUANTIZATIONS, "as loaded (bf16/f32)"))
    # 0: the decay spans max_steps. N: it spans N steps, then the learning rate holds at
    # its final value (`resume --max-steps` sets it to extend a finished run; see train/optim.py).
    schedule_steps: int = _field(0, "The step where the learning-rate decay ends (0: the last step); "
                                    "after it the rate holds.", "LR decay ends at step (0: at the last)")
    run_name: str = _field("", "A name for the run: its folder is named after it (default: the model's name).", "Run name")
    tags: str = _field("", "Comma-separated tags, shown in status and the run list (e.g. baseline, lr-sweep).", "Tags")
    eval_prompts: tuple[str, ...] = _field((), "Prompts sampled greedily at every eval, one a line, shown with "
                                                "the completions (default: 3 prompts of the eval split).", "Sample prompts (one a line; none: 3 from the eval split)")
    sample_tokens: int = _field(32, "New tokens per sample at each eval (0: no samples); keeps their cost small.", "Sample length (tokens; 0: no samples)")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], check_files: bool = True) -> TrainingConfig:
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
        if "lora_alpha" not in data and isinstance(kwargs.get("lora_rank"), int):
            kwargs["lora_alpha"] = float(kwargs["lora_rank"])  # scale 1, as before the field existed
        if "learning_rate" not in data:  # the model's and method's default (models.DEFAULT_LR)
            lr = models.default_learning_rate(kwargs.get("model", cls.model), kwargs.get("method", cls.method))
            kwargs["learning_rate"] = lr if lr is not None else cls.learning_rate
        if "warmup_steps" not in data and isinstance(kwargs.get("max_steps"), int):
            # The default warmup (10) would refuse a short run: at most a tenth of it instead.
            kwargs["warmup_steps"] = max(0, min(cls.warmup_steps, kwargs["max_steps"] // 10))
        config = cls(**kwargs)
        errors += config.problems(check_files=check_files, skip={e.field for e in type_errors})
        if errors:
            raise ConfigError(errors)
        return config._resolved()

    @classmethod
    def from_json_file(cls, path: str, check_files: bool = True) -> TrainingConfig:
        """A validated config from a JSON file; relative dataset and model paths are relative to the file."""
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
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainingConfig:
        """A validated copy with some fields changed."""
        return TrainingConfig.from_dict({**self.to_dict(), **changes})

    # -- validation -------------------------------------------------------------------------
    def problems(self, check_files: bool = True, skip: set[str] = frozenset()) -> list[FieldError]:
        """Every problem of this config (empty when it is valid)."""
        errs = [e for e in (*_number_problems(self), *_training_field_problems(self), *_choice_problems(self))
                if e.field not in skip]
        if "model" not in skip:
            errs += _model_problems(self.model)
            spec = models.MODELS.get(self.model)
            if spec is not None and spec.family == "gemma4" and self.quantization != "none" \
                    and "quantization" not in skip:
                errs.append(FieldError("quantization", "is not available for Gemma 4 models yet (the gemma "
                                       "library's int layers do not replace Gemma 4's); use 'none'"))
        # An unknown format is reported above; reading the file with it would raise instead.
        if "dataset" not in skip and "dataset_format" not in skip and \
                self.dataset_format in ("auto",) + datasets.FORMATS:
            errs += _dataset_problems(self, check_files)
        return errs

    def check(self, check_files: bool = True) -> TrainingConfig:
        """This config when it is valid, else ConfigError listing every problem."""
        errors = self.problems(check_files=check_files)
        if errors:
            raise ConfigError(errors)
        return self._resolved()

    # -- helpers ----------------------------------------------------------------------------
    def _resolved(self) -> TrainingConfig:
        changes = {}
        if self.dataset:
            changes["dataset"] = os.path.abspath(os.path.expanduser(self.dataset))
        if self.model not in models.MODELS:
            changes["model"] = os.path.abspath(os.path.expanduser(self.model))
        return dataclasses.replace(self, **changes)

    def model_spec(self) -> models.ModelSpec | None:
        """The table entry, or None for a local checkpoint directory."""
        return models.MODELS.get(self.model)

    def tag_list(self) -> list[str]:
        """`tags` as a list: split at commas, stripped, without empties or repeats."""
        return split_tags(self.tags)

    def run_name_prefix(self) -> str:
        """A filesystem-safe prefix for run folders: run_name, else the model name or the
        checkpoint's basename."""
        base = self.run_name.strip() or (
            self.model if self.model in models.MODELS else os.path.basename(os.path.normpath(self.model)))
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
        return safe or "run"


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What a form needs of one TrainingConfig field (from its type and metadata)."""

    name: str
    type: Any  # the resolved annotation: int, float, bool, str, tuple[str, ...]
    default: Any
    help: str
    label: str
    choices: tuple[tuple[str, str], ...]
    widget: str


def field_info(name: str) -> FieldInfo:
    """A TrainingConfig field's FieldInfo; KeyError for a name that is not a field."""
    import typing

    hints = typing.get_type_hints(TrainingConfig)
    for f in dataclasses.fields(TrainingConfig):
        if f.name == name:
            return FieldInfo(name, hints[name], f.default, f.metadata["help"], f.metadata["label"],
                             f.metadata["choices"], f.metadata["widget"])
    raise KeyError(name)


def field_help(name: str) -> str:
    """The help text of a TrainingConfig field (the form's tooltip)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(TrainingConfig) if f.name == name)


def split_tags(tags: str) -> list[str]:
    """The comma-separated tags, stripped, without empties or repeats, in order."""
    out: list[str] = []
    for tag in (t.strip() for t in tags.split(",")):
        if tag and tag not in out:
            out.append(tag)
    return out


def _number_problems(config: TrainingConfig) -> Iterator[FieldError]:
    """Counts, steps and rates out of range, and the batch that does not split over the processes."""
    for field in ("learning_rate",):
        if not config.learning_rate > 0:
            yield FieldError(field, f"must be > 0, got {config.learning_rate}")
    for field in ("batch_size", "max_steps", "max_seq_len", "lora_rank", "eval_every",
                  "checkpoint_every", "keep_checkpoints", "log_every"):
        value = getattr(config, field)
        if value <= 0:
            yield FieldError(field, f"must be a positive integer, got {value}")
    if not 1 <= config.num_processes <= MAX_PROCESSES:
        yield FieldError("num_processes", f"must be between 1 and {MAX_PROCESSES}, got {config.num_processes}")
    elif config.batch_size > 0 and config.batch_size % config.num_processes:
        yield FieldError("batch_size", f"must be a multiple of num_processes ({config.num_processes}): each process "
                         f"feeds an equal share of the global batch; got {config.batch_size}")
    if config.max_steps > MAX_STEPS:
        yield FieldError("max_steps", f"must be at most {MAX_STEPS:,} (the optimizer counts steps in int32), got {config.max_steps:,}")
    if config.schedule_steps and not max(config.warmup_steps, 1) <= config.schedule_steps <= config.max_steps:
        yield FieldError("schedule_steps", f"must be 0 or between warmup_steps and max_steps ({config.max_steps}), "
                         f"got {config.schedule_steps}")
    if not 0 <= config.sample_tokens <= MAX_SAMPLE_TOKENS:
        yield FieldError("sample_tokens", f"must be between 0 (no samples) and {MAX_SAMPLE_TOKENS}, got {config.sample_tokens}")
    if len(config.eval_prompts) > MAX_EVAL_PROMPTS:
        yield FieldError("eval_prompts", f"at most {MAX_EVAL_PROMPTS} prompts (each is sampled at every eval), "
                         f"got {len(config.eval_prompts)}")
    elif any(not p.strip() for p in config.eval_prompts):
        yield FieldError("eval_prompts", "an empty prompt; remove it")
    if config.warmup_steps < 0:
        yield FieldError("warmup_steps", f"must be >= 0, got {config.warmup_steps}")
    elif config.warmup_steps > config.max_steps > 0:
        yield FieldError("warmup_steps", f"must not exceed max_steps ({config.max_steps}): the learning rate would still be "
                         f"rising when training ends; use at most {config.max_steps}, or leave it out "
                         "(a tenth of max_steps, at most 10)")


def _choice_problems(config: TrainingConfig) -> Iterator[FieldError]:
    """Fields that take one of a few values (method, dtype, ...), the eval split and the webhook."""
    if not 0 <= config.eval_fraction < 1:
        yield FieldError("eval_fraction", f"must be in [0, 1), got {config.eval_fraction}")
    if config.method not in METHODS:
        yield FieldError("method", f"must be one of {', '.join(METHODS)}, got {config.method!r}")
    if config.notify and webhook_url.problem(config.notify):
        yield FieldError("notify", webhook_url.problem(config.notify))
    if config.dtype not in DTYPES:
        yield FieldError("dtype", f"must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    if config.remat not in REMATS:
        yield FieldError("remat", f"must be one of {', '.join(REMATS)}, got {config.remat!r}")
    if config.quantization not in QUANTIZATIONS:
        yield FieldError("quantization", f"must be one of {', '.join(QUANTIZATIONS)}, got {config.quantization!r}")
    elif config.quantization != "none" and config.method != "lora":
        yield FieldError("quantization", "quantizes the frozen base of LoRA; use method 'lora' or quantization 'none'")
    if config.dataset_format not in ("auto",) + datasets.FORMATS:
        yield FieldError("dataset_format", f"must be auto or one of {', '.join(datasets.FORMATS)}, "
                         f"got {config.dataset_format!r}")


def _training_field_problems(config: TrainingConfig) -> list[FieldError]:
    """The optimizer, LoRA and naming fields (see each field's help)."""
    errs = []
    if not config.lora_alpha > 0:
        errs.append(FieldError("lora_alpha", f"must be > 0 (the adapters' scale is alpha / rank), "
                                             f"got {config.lora_alpha}"))
    if not 0 <= config.lora_dropout <= MAX_LORA_DROPOUT:
        errs.append(FieldError("lora_dropout", f"must be between 0 and {MAX_LORA_DROPOUT}, got {config.lora_dropout}"))
    if not 0 <= config.weight_decay <= 1:
        errs.append(FieldError("weight_decay", f"must be between 0 and 1 (AdamW's decoupled decay; "
                                               f"0.0-0.1 is usual), got {config.weight_decay}"))
    if config.max_grad_norm < 0:
        errs.append(FieldError("max_grad_norm", f"must be >= 0 (0 turns clipping off), got {config.max_grad_norm}"))
    if not 1 <= config.grad_accum_steps <= MAX_GRAD_ACCUM:
        errs.append(FieldError("grad_accum_steps", f"must be between 1 and {MAX_GRAD_ACCUM}, "
                                                   f"got {config.grad_accum_steps}"))
    if config.lr_schedule not in LR_SCHEDULES:
        errs.append(FieldError("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}"))
    name = config.run_name
    if len(name) > MAX_RUN_NAME:
        errs.append(FieldError("run_name", f"must be at most {MAX_RUN_NAME} characters, got {len(name)}"))
    elif name and not re.fullmatch(r"[A-Za-z0-9._ -]+", name):
        bad = sorted(set(re.sub(r"[A-Za-z0-9._ -]", "", name)))
        errs.append(FieldError("run_name", f"may hold letters, digits, '.', '_', '-' and spaces (it names the "
                                           f"run's folder); found {''.join(bad)!r}"))
    elif name and not re.search(r"[A-Za-z0-9]", name):
        errs.append(FieldError("run_name", "must contain a letter or a digit"))
    tags = split_tags(config.tags)
    if len(tags) > MAX_TAGS:
        errs.append(FieldError("tags", f"at most {MAX_TAGS} tags, got {len(tags)}"))
    for tag in tags:
        if len(tag) > MAX_TAG_LEN or any(ord(c) < 32 for c in tag):
            errs.append(FieldError("tags", f"each tag is at most {MAX_TAG_LEN} printable characters; "
                                           f"{tag[:MAX_TAG_LEN]!r}... is not"))
            break
    return errs


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
            "tuple[str, ...]": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
        }[kind]
        if not ok:
            errors.append(FieldError(f.name, f"expected {_KIND_NAMES[kind]}, got {value!r} ({type(value).__name__})"))
            continue
        if kind == "float" and not math.isfinite(value):  # JSON's NaN / Infinity extensions
            errors.append(FieldError(f.name, f"must be a finite number, got {value!r}"))
            continue
        out[f.name] = float(value) if kind == "float" else tuple(value) if kind.startswith("tuple") else value
    return out, errors


_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "tuple[str, ...]": "a list of strings"}


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
