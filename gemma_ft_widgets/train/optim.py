"""The optimizer: AdamW with a linear warmup, then a cosine, linear or constant learning rate,
global-norm gradient clipping and decoupled weight decay (each from the run's config)."""

from __future__ import annotations

import jax
import optax

from ..config import END_LR_FRACTION  # cosine and linear decay to 10% of the peak

CLIP_NORM = 1.0
WEIGHT_DECAY = 0.01


def schedule(learning_rate: float, warmup_steps: int, max_steps: int, schedule_steps: int = 0,
             kind: str = "cosine") -> optax.Schedule:
    """0 -> learning_rate over warmup_steps, then (`kind`) cosine or linear to 10% of it at
    max_steps (or at schedule_steps, when set: an extended run then holds that final value to
    max_steps), or constant."""
    decay_steps = max(schedule_steps or max_steps, warmup_steps + 1)
    end = learning_rate * END_LR_FRACTION
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup_steps > 0 else learning_rate, peak_value=learning_rate,
            warmup_steps=warmup_steps, decay_steps=decay_steps, end_value=end)
    if kind == "linear":
        after = optax.linear_schedule(learning_rate, end, decay_steps - warmup_steps)
    elif kind == "constant":
        after = optax.constant_schedule(learning_rate)
    else:
        raise ValueError(f"unknown learning-rate schedule {kind!r}")
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), after], [warmup_steps])


def _decay_mask(params):
    """Weight decay on matrices only, not on norm scales or biases."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(learning_rate: float, warmup_steps: int, max_steps: int,
                   weight_decay: float = WEIGHT_DECAY, clip_norm: float = CLIP_NORM, schedule_steps: int = 0,
                   schedule_kind: str = "cosine"):
    """(optax transformation, schedule). The schedule gives the lr of update number `count`.
    clip_norm 0: no clipping."""
    sched = schedule(learning_rate, warmup_steps, max_steps, schedule_steps, schedule_kind)
    adamw = optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=_decay_mask)
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), adamw) if clip_norm > 0 else adamw
    return tx, sched


def for_config(cfg):
    """make_optimizer with a TrainingConfig's fields."""
    return make_optimizer(cfg.learning_rate, cfg.warmup_steps, cfg.max_steps, weight_decay=cfg.weight_decay,
                          clip_norm=cfg.max_grad_norm, schedule_steps=cfg.schedule_steps,
                          schedule_kind=cfg.lr_schedule)
