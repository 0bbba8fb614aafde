"""The optimizer: AdamW with linear warmup, cosine decay and global-norm gradient clipping."""

from __future__ import annotations

import jax
import optax

CLIP_NORM = 1.0
WEIGHT_DECAY = 0.01
from ..config import END_LR_FRACTION  # the cosine decays to 10% of the peak


def schedule(learning_rate: float, warmup_steps: int, max_steps: int, schedule_steps: int = 0) -> optax.Schedule:
    """0 -> learning_rate over warmup_steps, then cosine to 10% of it at max_steps (or at
    schedule_steps, when set: an extended run then holds that final value to max_steps)."""
    decay_steps = max(schedule_steps or max_steps, warmup_steps + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps > 0 else learning_rate,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        end_value=learning_rate * END_LR_FRACTION,
    )


def _decay_mask(params):
    """Weight decay on matrices only, not on norm scales or biases."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(learning_rate: float, warmup_steps: int, max_steps: int,
                   weight_decay: float = WEIGHT_DECAY, clip_norm: float = CLIP_NORM, schedule_steps: int = 0):
    """(optax transformation, schedule). The schedule gives the lr of update number `count`."""
    sched = schedule(learning_rate, warmup_steps, max_steps, schedule_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=_decay_mask),
    )
    return tx, sched
