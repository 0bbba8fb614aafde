"""Export a run's weights to other programs: gemma (orbax), Hugging Face, PEFT adapter, GGUF.

    python -m gemma_ft_widgets.export RUN_DIR --format {gemma,hf,peft,gguf} --out DIR \
        [--checkpoint step_N] [--dtype bfloat16|float32|float16|q8_0]

Each format has its own module (`hf`, `peft_adapter`, `gguf_file`); `hf_names` maps gemma's
parameter tree onto Hugging Face's names and shapes (numpy only) and `templates` holds the
chat template every format ships. This package's __init__ stays light: the run manager reads
FORMATS and the errors from it without importing jax, torch or transformers.
"""

from __future__ import annotations

FORMATS = ("gemma", "hf", "peft", "gguf")
DEFAULT_FORMAT = "gemma"
# The optional libraries each format needs (import name, pip name).
NEEDS = {
    "gemma": (),
    "hf": (("torch", "torch"), ("transformers", "transformers"), ("safetensors", "safetensors")),
    "peft": (("torch", "torch"), ("transformers", "transformers"), ("safetensors", "safetensors"),
             ("peft", "peft")),
    "gguf": (("gguf", "gguf"), ("transformers", "transformers")),
}
DTYPES = {
    "gemma": (),  # the run's own dtype
    "hf": ("bfloat16", "float32", "float16"),
    "peft": ("float32", "bfloat16", "float16"),
    "gguf": ("f16", "bf16", "f32", "q8_0"),
}
PIP_EXTRA = 'pip install "gemma_ft_widgets[export]"'


class ExportError(Exception):
    """A problem the user can fix; the message says what and how."""


def missing_libraries(fmt: str) -> list[str]:
    """pip names of the libraries `fmt` needs that cannot be found (nothing is imported)."""
    from importlib.util import find_spec

    return [pip for mod, pip in NEEDS.get(fmt, ()) if find_spec(mod) is None]


def check_request(fmt: str, dtype: str | None) -> None:
    """Raise ExportError for an unknown format or dtype, or a missing library (with pip)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None and not DTYPES[fmt]:
        raise ExportError(f"format {fmt!r} writes the run's own dtype; --dtype does not apply")
    if dtype is not None and dtype not in DTYPES[fmt]:
        raise ExportError(f"format {fmt!r} has no dtype {dtype!r}; choose one of {', '.join(DTYPES[fmt])}")
    missing = missing_libraries(fmt)
    if missing:
        raise ExportError(
            f"format {fmt!r} needs {', '.join(missing)}, which is not installed; install the export "
            f"extra: {PIP_EXTRA}  (or: pip install {' '.join(missing)})")


def load_torch_before_jax() -> None:
    """Import torch's compiler stack (triton) now, before jax compiles anything: in one process
    with the gemma trainer, libtriton segfaults when it loads after XLA's CPU backend ran."""
    import torch._dynamo  # noqa: F401  (imports triton when installed)
