"""What max_seq_len leaves of a dataset, checked before a run starts (no jax).

The trainer drops an example whose prompt fills max_seq_len: no response token is left for
the loss (train/data.py). A dataset where that empties the training set, or the eval split
that eval_fraction asked for, must be refused at Start, before a run folder exists, not after
the trainer has loaded the model. The rule: an example is dropped when its prompt has at
least max_seq_len tokens (the trainer's sequence is BOS + prompt + response, shifted by one;
a response always has a token, the end-of-turn or EOS). The split is the trainer's own
(`datasets.split_indices`).

Prompts are counted with the model's own sentencepiece file when it is on this machine
(tokenizers.py): exact. A named model that is not downloaded yet has no tokenizer here, and
none is fetched for a check: its prompts get a lower bound of one token per
MAX_PIECE_BYTES bytes (no Gemma piece is that long), so only what is sure to be dropped is
refused; the trainer checks the exact count after its download and fails with the same
message.
"""

from __future__ import annotations

import math
from typing import Any

from . import datasets, models, tokenizers

MAX_PIECE_BYTES = 64  # bytes of text one token covers at most (16 four-byte characters)


def nothing_to_train(path: str, n: int, max_seq_len: int, detail: str = "") -> str:
    """The error when truncation at max_seq_len leaves no training example with a response token."""
    return (f"{path}: no training example keeps a response token within max_seq_len={max_seq_len} "
            f"(all {n} dropped{detail}); raise max_seq_len")


def eval_emptied(path: str, n: int, max_seq_len: int, detail: str = "") -> str:
    """The error when truncation at max_seq_len drops every eval example."""
    return (f"{path}: all {n} eval examples were dropped: their prompt fills max_seq_len={max_seq_len}, "
            f"leaving no response token{detail}; raise max_seq_len, or set eval_fraction to 0")


def prompt_tokens(model: str, prompts: list[str]) -> tuple[list[int], str]:
    """(tokens per prompt, how they were counted): exact with the model's tokenizer, else a
    lower bound by length."""
    path = tokenizers.tokenizer_path(model)
    sp = None
    if path is not None:
        try:
            sp = tokenizers.processor(path)
        except Exception:  # noqa: BLE001 - an unreadable file: the trainer reports it
            sp = None
    if sp is not None:
        todo = [i for i, p in enumerate(prompts) if p]
        counts = [0] * len(prompts)
        family = getattr(models.MODELS.get(model), "family", "")
        for i, ids in zip(todo, sp.encode([datasets.for_family(prompts[i], family) for i in todo])):
            counts[i] = len(ids)
        return counts, "exact"
    return ([math.ceil(len(p.encode("utf-8")) / MAX_PIECE_BYTES) for p in prompts],
            f"a lower bound: the tokenizer of {model} is not on this machine yet, so a prompt counts "
            f"at least one token per {MAX_PIECE_BYTES} bytes")


def length_problems(config: Any) -> list:
    """FieldErrors (max_seq_len) when the dataset would leave nothing to train, or an empty
    eval split where eval_fraction asked for one. [] when it trains, or when the file cannot
    be read (config validation reports that)."""
    from .config import FieldError

    try:
        records, fmt = datasets.load_records(config.dataset, config.dataset_format)
    except (datasets.DatasetError, OSError):
        return []
    prompts = [datasets.render_example(r, fmt)[0] for r in records]
    limit = config.max_seq_len
    if not any(len(p.encode("utf-8")) + 1 >= limit for p in prompts):
        return []  # no prompt can reach the limit: a token covers at least one byte (or the BOS)
    counts, how = prompt_tokens(config.model, prompts)
    train_idx, eval_idx = datasets.split_indices(len(records), config.eval_fraction, config.seed)
    errors = []
    if all(counts[i] >= limit for i in train_idx):
        shortest = min(counts[i] for i in train_idx)
        detail = f"; the shortest prompt has {shortest} tokens" + ("" if how == "exact" else f", {how}")
        errors.append(FieldError("max_seq_len", nothing_to_train(config.dataset, len(train_idx), limit, detail)))
    if len(eval_idx) and all(counts[i] >= limit for i in eval_idx):
        shortest = min(counts[i] for i in eval_idx)
        detail = f" (the shortest has {shortest} tokens" + (")" if how == "exact" else f", {how})")
        errors.append(FieldError("max_seq_len", eval_emptied(config.dataset, len(eval_idx), limit, detail)))
    return errors
