"""Which sentencepiece file tokenises a model's text, found without jax and never downloaded.

`tiny` and `tiny-random` use the packaged tokenizer; a named Gemma model uses the
tokenizer.model of its kagglehub download when that is in the local cache; a local checkpoint
folder uses the one inside it or beside it. The trainer tokenises with the gemma library's
tokenizer class, which wraps the same sentencepiece file (`EncodeAsIds`, no BOS), so a count
here equals the trainer's. The dataset preview (ui/tokens.py) and the check before start
(length_check.py) both use this.
"""

from __future__ import annotations

import functools
import glob
import os
from importlib import resources

from . import models


@functools.lru_cache(maxsize=8)
def processor(path: str):
    """A sentencepiece processor of the file `path` (the last 8 files cached)."""
    import sentencepiece as spm  # a small C++ extension; no jax

    return spm.SentencePieceProcessor(model_file=path)


def tiny_tokenizer_path() -> str | None:
    """The packaged tokenizer of the tiny models, or None when it is not installed."""
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
    """The tokenizer file of a config's `model` on this machine, or None (not downloaded yet)."""
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
