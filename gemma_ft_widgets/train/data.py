"""Tokenise dataset records into fixed-length arrays and serve batches deterministically.

Why not `gm.data.Seq2SeqTask`: it applies its own single-turn template, while records here are
rendered by `datasets.render_example` (four formats, multi-turn chat); it cannot report how
many examples it truncated; and its grain transform runs per record. We tokenise with the
model's gm.text tokenizer (sentencepiece) and build exactly the arrays Seq2SeqTask builds:

    sequence = [bos] + prompt_tokens + response_tokens
    input    = sequence[:-1]      padded with 0 (pad) to max_seq_len
    target   = sequence[1:]
    mask     = 1 where the target is a response token, else 0 (prompt, bos, padding)

An example longer than max_seq_len + 1 tokens is cut at the end and counted in `truncated`;
one whose response is cut off entirely (no loss tokens left) is dropped and counted in
`dropped`. For the plain `text` format the whole text is the response and EOS is appended.

Batches are a pure function of (seed, step): epoch e uses the permutation
`default_rng([seed, e]).permutation(n_train)`, and step s takes positions
[s*B, (s+1)*B) of the concatenated epochs. Resuming at step s therefore reproduces the same
batches as a run that never stopped, and the data position saved in a checkpoint is s*B.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import datasets, length_check
from ..datasets import MAX_EVAL_EXAMPLES, split_indices  # noqa: F401 - the split's home is datasets

TICK_EVERY = 1024  # records tokenized between progress reports
EVAL_PAIRS = 8  # eval records kept as text for the samples logged at each eval


@dataclasses.dataclass
class Arrays:
    """One split as padded token arrays: inputs, next-token targets and the loss mask."""

    inputs: np.ndarray  # (N, L) int32
    targets: np.ndarray  # (N, L) int32
    mask: np.ndarray  # (N, L) float32

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The rows `idx` as a batch dict (input, target, mask)."""
        return {"input": self.inputs[idx], "target": self.targets[idx], "mask": self.mask[idx]}


@dataclasses.dataclass
class Dataset:
    """The tokenised train and eval splits, with what truncation cost and the eval prompts to sample."""

    train: Arrays
    eval: Arrays
    format: str
    truncated: int  # examples cut at max_seq_len (train + eval)
    dropped: int  # examples with no response token left after truncation
    max_seq_len: int
    dropped_train: int = 0
    dropped_eval: int = 0
    # (prompt, response) of the first eval records, rendered: the prompts sampled at each eval
    eval_pairs: list = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        """The counts reported in the `data` event: format, examples per split, truncated and dropped."""
        return {"format": self.format, "train_examples": len(self.train),
                "eval_examples": len(self.eval), "truncated": self.truncated,
                "dropped": self.dropped, "dropped_train": self.dropped_train, "dropped_eval": self.dropped_eval}


def encode_example(tokenizer, prompt: str, response: str, max_seq_len: int, add_eos: bool = False):
    """(input, target, mask, truncated) for one example, each of length max_seq_len."""
    special = tokenizer.special_tokens
    prompt_ids = [int(special.BOS)] + (tokenizer.encode(prompt) if prompt else [])
    response_ids = tokenizer.encode(response)
    if add_eos:
        response_ids.append(int(special.EOS))
    seq = np.asarray(prompt_ids + response_ids, dtype=np.int32)
    mask = np.concatenate([np.zeros(len(prompt_ids) - 1, np.float32), np.ones(len(response_ids), np.float32)])
    inp, tgt = seq[:-1], seq[1:]
    truncated = len(inp) > max_seq_len
    out = []
    for arr in (inp, tgt, mask):
        arr = arr[:max_seq_len]
        out.append(np.pad(arr, (0, max_seq_len - len(arr))))
    return out[0], out[1], out[2].astype(np.float32), truncated


def tokenize(records: list[dict], fmt: str, tokenizer, max_seq_len: int, tick=None) -> tuple[Arrays, int, int]:
    """`tick(k)` is told every TICK_EVERY records (and at the end) how many are done."""
    n = len(records)
    inputs = np.zeros((n, max_seq_len), np.int32)
    targets = np.zeros((n, max_seq_len), np.int32)
    mask = np.zeros((n, max_seq_len), np.float32)
    keep = np.ones(n, bool)
    truncated = 0
    for i, record in enumerate(records):
        prompt, response = datasets.render_example(record, fmt)
        inputs[i], targets[i], mask[i], cut = encode_example(
            tokenizer, prompt, response, max_seq_len, add_eos=(fmt == "text"))
        truncated += int(cut)
        keep[i] = mask[i].any()
        if tick is not None and ((i + 1) % TICK_EVERY == 0 or i + 1 == n):
            tick(i + 1)
    dropped = int((~keep).sum())
    return Arrays(inputs[keep], targets[keep], mask[keep]), truncated, dropped


def prepare(path: str, fmt: str, tokenizer, max_seq_len: int, eval_fraction: float, seed: int,
            progress=None) -> Dataset:
    """Read (DatasetError names file and line), split, tokenise. Raises DatasetError when
    nothing is left to train on. `progress(done, total)`: records tokenized so far."""
    records, fmt = datasets.load_records(path, fmt)
    train_idx, eval_idx = split_indices(len(records), eval_fraction, seed)
    n = len(records)
    if progress is not None:
        progress(0, n)
    ticks = [None, None] if progress is None else [lambda k: progress(k, n),
                                                    lambda k: progress(len(train_idx) + k, n)]
    train, t1, d1 = tokenize([records[i] for i in train_idx], fmt, tokenizer, max_seq_len, ticks[0])
    evals, t2, d2 = tokenize([records[i] for i in eval_idx], fmt, tokenizer, max_seq_len, ticks[1])
    # Start refuses these before launch (length_check.py); here for a tokenizer it had not.
    if len(train) == 0:
        raise datasets.DatasetError([length_check.nothing_to_train(path, len(train_idx), max_seq_len)])
    if len(eval_idx) and len(evals) == 0:  # eval_fraction asked for an eval split: never a silent none
        raise datasets.DatasetError([length_check.eval_emptied(path, len(eval_idx), max_seq_len)])
    pairs = [datasets.render_example(records[i], fmt) for i in eval_idx[:EVAL_PAIRS]]
    return Dataset(train, evals, fmt, t1 + t2, d1 + d2, max_seq_len, d1, d2, pairs)


class Batches:
    """Deterministic batches: `batch(step)` depends only on (seed, step)."""

    def __init__(self, arrays: Arrays, batch_size: int, seed: int, step_column: bool = False):
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.step_column = step_column  # a "step" column (the step's number in every row): keys dropout
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.arrays))
            self._perms[epoch] = perm
        return perm

    def indices(self, step: int) -> np.ndarray:
        """The example indices of `step`'s batch: a seeded permutation per epoch, read on across epoch boundaries."""
        n = len(self.arrays)
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = pos // n, pos % n
        return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets)])

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of `step` (with the `step` column when asked for)."""
        out = self.arrays.take(self.indices(step))
        if self.step_column:
            out["step"] = np.full((self.batch_size,), step, np.int32)
        return out

    def position(self, step: int) -> int:
        """Examples consumed before `step` (the data position saved in checkpoints)."""
        return step * self.batch_size

    def epoch(self, step: int) -> float:
        """The (fractional) epoch reached after `step` steps."""
        return step * self.batch_size / len(self.arrays)


def eval_batches(arrays: Arrays, batch_size: int):
    """Fixed-order batches over the eval set; the last one is padded with mask-0 rows."""
    n = len(arrays)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        batch = arrays.take(idx)
        short = batch_size - len(idx)
        if short:
            batch = {k: np.concatenate([v, np.zeros((short,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
        yield batch


def real_tokens(batch: dict[str, np.ndarray]) -> int:
    """Non-padding input tokens in a batch (what tokens_per_s counts)."""
    return int(np.count_nonzero(batch["input"]))
