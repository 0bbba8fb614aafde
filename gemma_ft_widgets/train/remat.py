"""Rematerialisation: recompute each transformer block's activations in the backward pass.

`with_block_remat(model)` returns the same network (same fields, same parameter tree) whose
`__call__` runs every `Block` (Gemma 2/3, 3n and 4 all name their layer class `Block`) under
`flax.linen.checkpoint` with the `nothing_saveable` policy: the backward pass keeps only each
block's input and recomputes the rest, so activation memory is one block's worth plus one
(batch, seq, width) tensor per layer, at the cost of one more forward pass (~+33 % compute).

Why a subclass and an interceptor rather than `nn.remat(Block)`: the gemma classes create their
blocks inside `setup()`, so the block class cannot be swapped without copying that code; a
flax method interceptor sees every block call whatever the architecture. Why a subclass at all
rather than entering the interceptor around `apply`: gemma's `Transformer.__call__` is an
`nn.jit` whose trace cache is keyed by the module and the input shapes, not by interceptors in
effect, so a plain and a rematerialised call of the same module object would share one trace.
A distinct class is a distinct cache key. (Wrapping modules that share scope, like
gm.nn.LoRA does, cannot be nested: flax loses the parameters, so this is not a wrapper.)
"""

from __future__ import annotations

import contextvars
import functools

REMAT_MODES = ("none", "block")
_INSIDE = contextvars.ContextVar("gemma_ft_remat_inside", default=False)
_SUBCLASSES: dict[type, type] = {}


def _call_block(block, args, kwargs):
    token = _INSIDE.set(True)  # the block's own __call__ must not be intercepted again
    try:
        return block(*args, **kwargs)
    finally:
        _INSIDE.reset(token)


@functools.cache
def _checkpointed():
    import flax.linen as nn
    import jax

    return nn.checkpoint(_call_block, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=True)


def _interceptor(next_fun, args, kwargs, context):
    if (context.method_name == "__call__" and type(context.module).__name__ == "Block"
            and not _INSIDE.get()):
        return _checkpointed()(context.module, tuple(args), dict(kwargs))
    return next_fun(*args, **kwargs)


def _subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:
        import flax.linen as nn

        def __call__(self, *args, **kwargs):
            with nn.intercept_methods(_interceptor):
                return super(sub, self).__call__(*args, **kwargs)

        sub = type(f"BlockRemat{cls.__name__}", (cls,), {"__call__": __call__, "__module__": __name__})
        _SUBCLASSES[cls] = sub
    return _SUBCLASSES[cls]


def with_block_remat(model):
    """`model` (an unbound gemma network) with every block rematerialised."""
    import dataclasses

    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.init and f.name not in ("parent", "name")}
    return _subclass(type(model))(**fields)


def is_rematerialised(model) -> bool:
    """Whether `model` (or the model a LoRA wrapper holds) came from `with_block_remat`."""
    base = getattr(model, "model", model)  # through the LoRA wrapper
    return type(base) in _SUBCLASSES.values()


def apply(model, mode: str):
    """`model` with block remat for mode "block", as it is otherwise; ValueError for a mode not in REMAT_MODES."""
    if mode not in REMAT_MODES:
        raise ValueError(f"remat must be one of {REMAT_MODES}, got {mode!r}")
    return with_block_remat(model) if mode == "block" else model
