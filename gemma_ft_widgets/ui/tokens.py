"""Token counts for the dataset preview, without jax.

The tokenizer file comes from gemma_ft_widgets/tokenizers.py (packaged for `tiny`, a cached
kagglehub download, a local checkpoint; never fetched); without one, the count is an
approximation (characters / 4), and is labelled so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from ..tokenizers import processor as _processor
from ..tokenizers import tiny_tokenizer_path, tokenizer_path

APPROX_LABEL = "approximate: chars/4"


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
