"""Token counts for the dataset preview, without jax.

The tiny model's packaged sentencepiece model is used for `tiny`; a named model's
tokenizer.model is used when its kagglehub download is in the local cache (never fetched);
anything else is an approximation (characters / 4), and is labelled so.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from importlib import resources
from typing import Callable

from .. import models

APPROX_LABEL = "approximate: chars/4"


@functools.lru_cache(maxsize=8)
def _processor(path: str):
    import sentencepiece as spm  # a small C++ extension; no jax

    return spm.SentencePieceProcessor(model_file=path)


def tiny_tokenizer_path() -> str | None:
    path = str(resources.files("gemma_ft_widgets") / "data" / "tiny_tokenizer.model")
    return path if os.path.isfile(path) else None


def kagglehub_tokenizer_path(spec: models.ModelSpec) -> str | None:
    """tokenizer.model of a cached kagglehub download of `spec`, if there is one."""
    if not spec.kaggle_handle:
        return None
    root = os.environ.get("KAGGLEHUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kagglehub")
    folder = os.path.join(root, "models", *spec.kaggle_handle.split("/"))
    for pattern in ("tokenizer.model", "*/tokenizer.model"):
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        if found:
            return found[0]
    return None


def tokenizer_path(model: str) -> str | None:
    spec = models.MODELS.get(model)
    if spec is not None and spec.family == "tiny":
        return tiny_tokenizer_path()
    if spec is not None:
        return kagglehub_tokenizer_path(spec)
    if model and os.path.isdir(model):  # a local checkpoint folder (or its parent) holds it
        for candidate in (os.path.join(model, "tokenizer.model"),
                          os.path.join(os.path.dirname(os.path.normpath(model)), "tokenizer.model")):
            if os.path.isfile(candidate):
                return candidate
    return None


def counter(model: str) -> tuple[Callable[[str], int], str]:
    """(count_tokens(text), label saying which tokenizer counts)."""
    path = tokenizer_path(model)
    if path is not None:
        try:
            sp = _processor(path)
        except Exception:  # noqa: BLE001 - a broken file: fall back, labelled
            sp = None
        if sp is not None:
            label = "tokenizer: " + (os.path.basename(path) if path == tiny_tokenizer_path() else path)
            return (lambda text: len(sp.encode(text))), label
    return (lambda text: math.ceil(len(text) / 4)), APPROX_LABEL


def example_lengths(pairs: list[tuple[str, str]], count: Callable[[str], int]) -> list[int]:
    """Tokens per (prompt, response) example, counting the BOS token the trainer adds."""
    return [1 + (count(p) if p else 0) + count(r) for p, r in pairs]
