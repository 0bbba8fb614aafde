"""The model table: names users pick, mapped to kagglehub handles, sizes and shapes.

Readable without jax, so the form and the estimate can use it in a light kernel. The trainer
builds the actual network from `gm_class` (named models) or from `TINY` (the tiny model).
Param counts are those of the text-only network the trainer builds, measured with
`jax.eval_shape` on the gemma library (tests/test_train_models.py checks them against the
installed version). Gemma 3 4B/12B/27B are multimodal: with the vision encoder, which the
trainer never loads, they count 4299.9M / 12187.1M / 27432.1M.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from importlib import metadata


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the table: its family, size, shape, the gemma class and Kaggle handle that load it."""

    name: str
    family: str  # tiny | gemma2 | gemma3 | gemma4
    params: int
    default_seq_len: int
    num_layers: int
    embed_dim: int
    hidden_dim: int
    num_heads: int
    head_dim: int
    num_kv_heads: int
    vocab_size: int
    gm_class: str | None = None  # attribute of gemma.gm.nn
    kaggle_handle: str | None = None  # versioned: unversioned handles always hit the network
    min_gemma: str | None = None  # first gemma library version that has gm_class
    instruction_tuned: bool = False
    base_weights: str | None = None  # tiny family: the packaged weights file (None: random init)
    # Fields of gm_class's config replaced, as ((name, value), ...): an architecture at other
    # widths (a toy Gemma 4 that the tests train on a CPU). With no Kaggle handle it starts random.
    config_overrides: tuple = ()

    @property
    def label(self) -> str:
        """`gemma3-1b (999.9M)`: for dropdowns."""
        return f"{self.name} ({format_params(self.params)})"


def format_params(n: int) -> str:
    """A parameter count as people write it: 1.2B, 270.0M, 85k."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k"


# The tiny model: a Gemma-architecture transformer (two layers, one local sliding and one
# global attention) with the packaged 512-piece tokenizer. Trains at hundreds of steps per
# second on a CPU. `tiny` starts from the packaged pretrained base (scripts/pretrain_tiny.py),
# so LoRA on it learns as LoRA on a real Gemma does; `tiny-random` is the same network
# randomly initialised from the run's seed.
TINY = ModelSpec(
    name="tiny", family="tiny", params=107_200, default_seq_len=128,
    num_layers=2, embed_dim=64, hidden_dim=128, num_heads=2, head_dim=32, num_kv_heads=1,
    vocab_size=512, base_weights="tiny_base.npz",
)
TINY_RANDOM = dataclasses.replace(TINY, name="tiny-random", base_weights=None)


def _named(name, family, gm_class, variation, params, seq, shapes, min_gemma=None):
    layers, embed, hidden, heads, head_dim, kv, vocab = shapes
    handle_model = {"gemma2": "gemma-2", "gemma3": "gemma-3", "gemma4": "gemma-4"}[family]
    specs = []
    for it in (False, True):
        var = variation + ("-it" if it else "")
        specs.append(ModelSpec(
            name=var, family=family, params=params, default_seq_len=seq,
            num_layers=layers, embed_dim=embed, hidden_dim=hidden, num_heads=heads,
            head_dim=head_dim, num_kv_heads=kv, vocab_size=vocab, gm_class=gm_class,
            kaggle_handle=f"google/{handle_model}/flax/{var}/1", min_gemma=min_gemma,
            instruction_tuned=it,
        ))
    return specs


_G3_VOCAB = 262_144
_G2_VOCAB = 256_128

_ALL: list[ModelSpec] = [TINY, TINY_RANDOM]
_ALL += _named("gemma3-270m", "gemma3", "Gemma3_270M", "gemma3-270m", 268_098_176, 1024,
               (18, 640, 2048, 4, 256, 1, _G3_VOCAB))
_ALL += _named("gemma3-1b", "gemma3", "Gemma3_1B", "gemma3-1b", 999_885_952, 1024,
               (26, 1152, 6912, 4, 256, 1, _G3_VOCAB))
_ALL += _named("gemma3-4b", "gemma3", "Gemma3_4B", "gemma3-4b", 3_880_099_328, 2048,
               (34, 2560, 10240, 8, 256, 4, _G3_VOCAB))
_ALL += _named("gemma3-12b", "gemma3", "Gemma3_12B", "gemma3-12b", 11_765_788_416, 2048,
               (48, 3840, 15360, 16, 256, 8, _G3_VOCAB))
_ALL += _named("gemma3-27b", "gemma3", "Gemma3_27B", "gemma3-27b", 27_009_002_240, 2048,
               (62, 5376, 21504, 32, 128, 16, _G3_VOCAB))
_ALL += _named("gemma2-2b", "gemma2", "Gemma2_2B", "gemma2-2b", 2_614_636_800, 1024,
               (26, 2304, 9216, 8, 256, 4, _G2_VOCAB))
_ALL += _named("gemma2-9b", "gemma2", "Gemma2_9B", "gemma2-9b", 9_242_164_736, 1024,
               (42, 3584, 14336, 16, 256, 8, _G2_VOCAB))
_ALL += _named("gemma2-27b", "gemma2", "Gemma2_27B", "gemma2-27b", 27_227_718_144, 1024,
               (46, 4608, 36864, 32, 128, 16, _G2_VOCAB))
# Gemma 4 (gemma>=4.0; needs Python >= 3.12). Shapes are approximate and only feed the
# estimate; the trainer builds the network from the library's own config class. LoRA adapts
# their einsums through train/lora.py (gm.nn.LoRA alone finds none in gemma 4.0.1).
# Gemma4_26B_A4B and Gemma4_31B are left out: not tried (MoE experts are not einsums LoRA adapts).
_ALL += _named("gemma4-e2b", "gemma4", "Gemma4_E2B", "gemma4-e2b", 4_647_449_891, 2048,
               (35, 1536, 6144, 8, 256, 1, _G3_VOCAB), min_gemma="4.0")
_ALL += _named("gemma4-e4b", "gemma4", "Gemma4_E4B", "gemma4-e4b", 7_518_069_034, 2048,
               (42, 2560, 10240, 8, 256, 2, _G3_VOCAB), min_gemma="4.0")


# Learning-rate defaults by family and method (the one home of them; config.from_dict and the
# form use them). tiny: small and briefly pretrained, 3e-3 trains it in a few hundred steps.
# A real Gemma: LoRA at 2e-4 and full fine-tuning at 1e-5, what Gemma LoRA/full fine-tuning
# recipes use (Hugging Face PEFT/TRL examples 1e-4..2e-4 for LoRA, 1e-5..2e-5 for full);
# 3e-3 makes LoRA on a real Gemma diverge.
DEFAULT_LR = {
    "tiny": {"lora": 3e-3, "full": 3e-3},
    "gemma2": {"lora": 2e-4, "full": 1e-5},
    "gemma3": {"lora": 2e-4, "full": 1e-5},
    "gemma4": {"lora": 2e-4, "full": 1e-5},
}


def default_learning_rate(model: str, method: str) -> float | None:
    """The learning-rate default of a table model and method; None for a local checkpoint
    (its family is not known here) or an unknown method."""
    spec = MODELS.get(model)
    return DEFAULT_LR.get(spec.family, {}).get(method) if spec is not None else None


def _installed_gemma() -> tuple[int, ...] | None:
    try:
        version = metadata.version("gemma")
    except metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _supported(spec: ModelSpec, installed: tuple[int, ...] | None) -> bool:
    if spec.min_gemma is None or installed is None:
        return spec.min_gemma is None
    need = tuple(int(p) for p in spec.min_gemma.split("."))
    return installed[: len(need)] >= need


MODELS: dict[str, ModelSpec] = {
    s.name: s for s in _ALL if _supported(s, _installed_gemma())
}


def model_names() -> list[str]:
    """The names of the models the installed gemma library supports."""
    return list(MODELS)


_CKPT_MARKERS = {"_METADATA", "_CHECKPOINT_METADATA", "checkpoint", "manifest.ocdbt", "tokenizer.model"}


def is_local_checkpoint(path: str, depth: int = 1) -> bool:
    """A directory that looks like an orbax / gemma checkpoint (or a kagglehub download).

    Kaggle downloads nest the checkpoint one level down, beside tokenizer.model, so one level
    of subfolders is searched, never more: a path like ~ must not walk the whole tree.
    """
    if not path or not os.path.isdir(path):
        return False
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    if names & _CKPT_MARKERS:
        return True
    return depth > 0 and any(
        is_local_checkpoint(os.path.join(path, n), depth - 1) for n in names if not n.startswith("."))


def closest_model(name: str) -> str | None:
    """The supported model name nearest to `name`, for a "did you mean"; None when none is close."""
    match = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.4)
    return match[0] if match else None


def get_model(name: str) -> ModelSpec:
    """The spec of a named model. KeyError with a suggestion for unknown names."""
    try:
        return MODELS[name]
    except KeyError:
        hint = closest_model(name)
        msg = f"unknown model {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
        raise KeyError(msg) from None
