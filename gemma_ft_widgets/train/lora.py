"""LoRA: wrap the model, split trainable from frozen params, fold adapters into the base.

Training keeps the optimizer state for the LoRA leaves only (`gemma.peft.split_params`).
The adapters are stored and optimised in f32 (MASTER_DTYPE, a few MB even for 27B models) and
cast to the model's compute dtype inside the step, so with a bf16 base the layers still run
in bf16 while small Adam updates are not rounded away.
LoRA alpha: the update is scaled by alpha / rank (PEFT's convention). The stored adapters are
the trained (A, B); `scaled` gives the adapters as the model uses them, (A, s·B), which is what
the train step merges and what sampling and export fold in: one place applies the scale.
LoRA dropout: `_DropoutLoRAEinsum` drops the adapter's input (not the base path's) while an
rng named "dropout" is given (the train step); eval and sampling run without it.
`merge_into_base` computes W + A·B for every adapter (using the einsum the layer really runs,
recorded while tracing the model, so the result is exact for any layout) and returns plain
base-model params: what export writes and what the sampler runs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MASTER_DTYPE = jnp.float32  # adapters' stored / optimised dtype


def wrap(model, rank: int, dtype=jnp.float32, dropout: float = 0.0):
    """gm.nn.LoRA around `model` (also adapting Gemma 4's einsums, see `_lora_class`); `dtype`
    is the adapters' compute dtype (= the base's); `dropout` on the adapters' input in training."""
    return _lora_class()(rank=rank, model=model, dtype=dtype, dropout=dropout)


def scale(alpha: float, rank: int) -> float:
    """The factor on the LoRA update: alpha / rank."""
    return float(alpha) / int(rank)


def scaled(adapters, factor: float):
    """The adapters as the model uses them: every B multiplied by `factor` (A·(s·B) = s·A·B)."""
    if factor == 1.0:
        return adapters
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * jnp.asarray(factor, x.dtype) if getattr(path[-1], "key", None) == "b" else x, adapters)


def replace_by_lora(module, *, rank: int, dtype, dropout: float = 0.0):
    """gm.nn.LoRA's module replacement, plus Gemma 4's Einsum (gemma4/_layers.Einsum, the same
    interface as gm.nn's, which gm.nn.LoRA's interceptor does not match, so it found no layer
    to adapt in Gemma 4). Named as gm.nn.LoRA names its adapters: the same parameter tree.
    With `dropout`, the einsum adapters drop their input in training (`_DropoutLoRAEinsum`)."""
    from gemma.gm.nn import _layers
    from gemma.gm.nn import _lora as gm_lora

    g4 = _gemma4_einsum()
    is_g4 = g4 is not None and type(module) is g4
    if is_g4 and module.w_scale is not None:  # the per-layer-input embedding projection: W·s + A·B
        return module                        # would not merge as W + A·B, so it is not adapted
    if is_g4 or (dropout > 0 and isinstance(module, _layers.Einsum)):
        name = None if module.weight_name == "w" else f"_LoRAEinsum_{module.weight_name}"
        if dropout > 0:
            return _dropout_einsum_class()(name=name, rank=rank, dtype=dtype, wrapped=module, dropout=dropout)
        return gm_lora._LoRAEinsum(name=name, rank=rank, dtype=dtype, wrapped=module)
    return gm_lora._replace_by_lora(module, rank=rank, dtype=dtype, verbose=False)


@functools.cache
def _dropout_einsum_class():
    import flax.linen as nn
    from gemma import peft
    from gemma.gm.nn import _lora as gm_lora

    class _LoRAEinsum(gm_lora._LoRAEinsum):  # the library's name: flax names the params after it
        """gm's LoRA einsum with dropout on the adapter's input, while a "dropout" rng is given."""

        dropout: float = 0.0

        @nn.compact
        def __call__(self, eqn: str, x: jax.Array) -> jax.Array:
            adapter = peft.LoRAEinsumAdapter(name="lora", rank=self.rank, dtype=self.dtype, einsum_str=eqn,
                                             shape=self.wrapped.shape)
            dropped = nn.Dropout(self.dropout, deterministic=not self.has_rng("dropout"))(x)
            return self.wrapped(eqn, x) + adapter(dropped)

    _LoRAEinsum.__qualname__ = "_LoRAEinsum"
    return _LoRAEinsum


def _gemma4_einsum():
    try:
        from gemma.gm.nn.gemma4 import _layers as g4_layers
    except ImportError:  # an older gemma without Gemma 4
        return None
    return g4_layers.Einsum


@functools.cache
def _lora_class():
    import flax.linen as nn
    from gemma import gm, peft

    class LoRA(gm.nn.LoRA):
        dropout: float = 0.0

        @nn.compact
        def __call__(self, *args, **kwargs):
            replace = functools.partial(replace_by_lora, rank=self.rank, dtype=self.dtype, dropout=self.dropout)
            with peft.ModuleInterceptor(replace):
                return self.model(*args, **kwargs)

    return LoRA


def to_master(tree):
    """A tree cast to MASTER_DTYPE, the dtype the trainable weights are kept in."""
    return jax.tree.map(lambda x: x.astype(MASTER_DTYPE), tree)


def to_compute(tree, dtype):
    """A tree cast to the compute `dtype`."""
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def split(params):
    """(frozen base params, lora params)."""
    from gemma import peft

    return peft.split_params(params)


def merge(frozen, lora_params):
    """The full params tree again from (frozen base params, lora params), the inverse of `split`."""
    from gemma import peft

    return peft.merge_params(frozen, lora_params)


def init_lora_params(lora_model, seed: int):
    """Fresh adapters (A random, B zero: the wrapped model starts equal to the base).

    Only the LoRA leaves leave the jitted init; XLA drops the unused base initialisation.
    Returned in MASTER_DTYPE (f32).

    The dummy input's shape depends on (rank, dtype) on purpose: gemma's Transformer.__call__
    is an `nn.jit` whose trace cache is keyed by the base module and the input shapes, not by
    the LoRA interceptor around it, so a second init with another rank in the same process
    would silently return the first rank's shapes. LoRA params depend only on (base, rank,
    dtype), so distinct shapes per (rank, dtype) make every cache hit correct.
    """
    dtypes = (jnp.float32, jnp.bfloat16, jnp.float16)
    d = next((i for i, t in enumerate(dtypes) if jnp.dtype(t) == jnp.dtype(lora_model.dtype)), len(dtypes))
    tokens = jnp.ones((1 + d, 8 + lora_model.rank), jnp.int32)
    key = jax.random.fold_in(jax.random.key(seed), 1)
    return jax.jit(lambda k: to_master(split(lora_model.init(k, tokens)["params"])[1]))(key)


def adapter_einsums(lora_model, params) -> dict[tuple[str, ...], tuple[str, str]]:
    """{path of an adapter's parent module: (einsum equation, base weight name)}.

    Traced with jax.eval_shape (no compute, no memory), by intercepting gemma's LoRA Einsum
    wrappers. Dense-style adapters (gemma 4 vision/audio layers) are not used in text-only
    models and are reported as unsupported by `merge_into_base`.
    """
    import flax.linen as nn
    from gemma.gm.nn import _lora as gm_lora

    found: dict[tuple[str, ...], tuple[str, str]] = {}

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, gm_lora._LoRAEinsum) and context.method_name == "__call__":  # Gemma 4's subclass too
            eqn = args[0] if args else kwargs["eqn"]
            found[tuple(mod.path)] = (eqn, mod.wrapped.weight_name)
        return next_fun(*args, **kwargs)

    tokens = jnp.ones((1, 8), jnp.int32)
    # disable_jit: gemma's Transformer.__call__ is an nn.jit whose trace cache is keyed by the
    # module and the input shapes, not by the interceptors in effect. Once any code has traced
    # an equal model on (1, 8) tokens, a jitted call replays that trace and no einsum is seen.
    with jax.disable_jit(), nn.intercept_methods(interceptor):
        jax.eval_shape(lambda p: lora_model.apply({"params": p}, tokens), params)
    return found


def _delta(eqn: str, weight_shape, a, b):
    from gemma.peft import _einsum_utils

    lora_eqn, a_shape, b_shape = _einsum_utils.get_lora_einsum_str_and_shapes(
        einsum_str=eqn, weights_shape=weight_shape, rank=a.shape[-1])
    _, a_str, b_str = lora_eqn.split("->")[0].split(",")
    weights = eqn.replace(" ", "").split("->")[0].split(",")[1]
    assert tuple(a.shape) == tuple(a_shape) and tuple(b.shape) == tuple(b_shape), (eqn, a.shape, b.shape)
    return jnp.einsum(f"{a_str},{b_str}->{weights}", a.astype(jnp.float32), b.astype(jnp.float32))


def merge_into_base(lora_model, frozen, lora_params):
    """Base-model params with every adapter folded in: W <- W + A·B (in W's dtype)."""
    merged_tree = merge(frozen, lora_params)
    einsums = adapter_einsums(lora_model, merged_tree)
    out = jax.tree.map(lambda x: x, frozen)  # a copy we may mutate (dicts only)

    def get(tree, path):
        for k in path:
            tree = tree[k]
        return tree

    n_lora = sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(lora_params)
                 if getattr(p[-1], "key", None) == "a")
    if n_lora != len(einsums):
        raise NotImplementedError(
            f"{n_lora} LoRA adapters but {len(einsums)} recognised einsum layers; cannot merge")
    for path, (eqn, weight_name) in einsums.items():
        ad = get(lora_params, path)["lora"]
        parent = get(out, path[:-1])
        w = parent[weight_name]
        parent[weight_name] = (w.astype(jnp.float32) + _delta(eqn, w.shape, ad["a"], ad["b"])).astype(w.dtype)
    return out
