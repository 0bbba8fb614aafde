"""Quantized frozen base for LoRA (QLoRA-style): int8 or int4 weights, f32 adapters.

What comes from the gemma library:
* the layers: `gm.nn.IntWrapper`'s interceptor (`_replace_by_int`) swaps every gemma Einsum for
  `_IntEinsum`, which holds `kernel` (int8/int4) and a per-channel `scale` and dequantizes inside
  the forward pass (`kernel.astype(x.dtype) / scale`), and
* the adapters: `gm.nn.LoRA`'s interceptor (`_replace_by_lora`),
* the rounding: `gemma.peft._quantization_utils.uniform_quantize` (what `peft.quantize` uses) (per-channel, symmetric, scale = (2^(b-1)-1) / max|w|).

What is written here, and why:
* `QuantizedLoRA`, one wrapper entering both interceptors (LoRA outside, int inside): nesting
  the library's two wrappers, `gm.nn.LoRA(model=gm.nn.IntWrapper(...))`, loses the parameters
  (each shares its scope with the one inside; two levels of that do not work in flax).
* `quantize_params`: `peft.quantize` picks the reduced axes from the weight's shape and gets the
  MLP's gating einsum wrong for the transposed layout Gemma 3 uses (scale (1, 1, d) where the
  layer expects (2, hidden, 1)), so the axes are read from the scale shapes the layer itself
  declares, and only the rounding is the library's.

The parameter tree differs from plain LoRA's: each einsum holds `_IntEinsum_*` (kernel, scale)
and `_LoRAEinsum_*/lora/{a, b}`. The embedding and the norms stay in the compute dtype (the
embedding is gathered and is the tied output layer; the library does not quantize it).
Activations still keep a dequantized copy of each weight for the backward pass unless the
blocks are rematerialised (`remat: "block"`), which recomputes it block by block.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

QUANTIZATIONS = ("none", "int8", "int4")
_BITS = {"int8": 8, "int4": 4}


def int_dtype(mode: str):
    """The jnp integer dtype of quantization mode "int8" or "int4"."""
    return {"int8": jnp.int8, "int4": jnp.int4}[mode]


class QuantizedLoRA(nn.Module):
    """gm.nn.LoRA over a model whose einsums hold int weights (gm.nn.IntWrapper's layers)."""

    _: dataclasses.KW_ONLY
    rank: int
    model: nn.Module
    dtype: Any = jnp.float32  # the adapters' compute dtype (= the base's)
    int_dtype: Any = jnp.int8
    dropout: float = 0.0  # on the adapters' input, in training (lora.replace_by_lora)

    def __post_init__(self):
        super().__post_init__()
        if self.scope is not None:  # transparent for the params, as gm.nn.LoRA
            nn.share_scope(self, self.model)

    @nn.compact
    def __call__(self, *args, **kwargs):
        """Run the wrapped model with both interceptors entered: LoRA adapters over int einsums."""
        from gemma import peft
        from gemma.gm.nn import _quantization

        from . import lora

        to_lora = functools.partial(lora.replace_by_lora, rank=self.rank, dtype=self.dtype, dropout=self.dropout)
        to_int = functools.partial(_quantization._replace_by_int, dtype=self.int_dtype)
        with peft.ModuleInterceptor(to_lora), peft.ModuleInterceptor(to_int):
            return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def wrap(model, rank: int, mode: str, dtype=jnp.float32, dropout: float = 0.0) -> QuantizedLoRA:
    """`model` wrapped as a QuantizedLoRA with adapters of `rank` over `mode` (int8/int4) weights."""
    return QuantizedLoRA(rank=rank, model=model, dtype=dtype, int_dtype=int_dtype(mode), dropout=dropout)


def wrap_lora(model, rank: int, mode: str, dtype=jnp.float32, dropout: float = 0.0):
    """The LoRA model of a run: gm.nn.LoRA, or QuantizedLoRA when `mode` is int8/int4;
    `dropout` on the adapters' input in training."""
    from . import lora

    return (lora.wrap(model, rank, dtype=dtype, dropout=dropout) if mode == "none"
            else wrap(model, rank, mode, dtype, dropout))


def frozen_params(lora_model, params, mode: str):
    """The frozen base as the LoRA model holds it: `params`, or their quantized form."""
    return params if mode == "none" else quantize_params(lora_model, params, mode)


def _source_key(int_name: str) -> str:
    # gm.nn.IntWrapper names the layer replacing Einsum(weight_name=n) `_IntEinsum_n`, except
    # the default 'w', whose replacement gets flax's automatic name `_IntEinsum_0`.
    return "w" if int_name == "_IntEinsum_0" else int_name[len("_IntEinsum_"):]


def quantize_params(qmodel: QuantizedLoRA, params, mode: str):
    """The base params of `qmodel`'s frozen tree: every einsum weight rounded to int8/int4 with
    per-channel scales, everything else as given. Runs leaf by leaf (no second full copy)."""
    from gemma.peft import _quantization_utils as qu

    from . import lora

    abstract = jax.eval_shape(lambda: qmodel.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"])
    frozen_like, _ = lora.split(abstract)
    bits, dtype = _BITS[mode], int_dtype(mode)

    @functools.partial(jax.jit, static_argnums=(1,))
    def one(w, axes):
        q, scale = qu.uniform_quantize(w.astype(jnp.float32), bitwidth=bits,
                                         granularity=qu.QuantizationGranularity.PER_CHANNEL,
                                         dtype=dtype, axis_to_reduce=axes)
        return q, scale

    def walk(like, src, path):
        out = {}
        for key, sub in like.items():
            if key.startswith("_IntEinsum"):
                w = src[_source_key(key)]
                kshape, sshape = sub["kernel"].shape, sub["scale"].shape
                axes = tuple(i for i, (k, s) in enumerate(zip(kshape, sshape)) if s == 1 and k != 1)
                q, scale = one(w, axes)
                if tuple(q.shape) != tuple(kshape) or tuple(scale.shape) != tuple(sshape):
                    raise ValueError(f"{'/'.join(path + (key,))}: quantized {q.shape}/{scale.shape}, "
                                     f"the layer expects {kshape}/{sshape}")
                out[key] = {"kernel": q, "scale": scale.astype(sub["scale"].dtype)}
            elif isinstance(sub, dict) and key not in src:  # an adapter's place (split leaves {})
                out[key] = walk(sub, {}, path + (key,))
            elif isinstance(sub, dict):
                out[key] = walk(sub, src[key], path + (key,))
            else:
                out[key] = src[key]
        return out

    return walk(frozen_like, params, ())


def param_bytes(tree) -> int:
    """Bytes of a tree counting int4 as half a byte (as an accelerator stores it)."""
    total = 0
    for x in jax.tree.leaves(tree):
        bits = 4 if jnp.dtype(x.dtype) == jnp.dtype(jnp.int4) else jnp.dtype(x.dtype).itemsize * 8
        total += x.size * bits // 8
    return total
