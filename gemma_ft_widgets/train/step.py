"""The loss, the jitted train step and the eval step.

Loss: next-token cross-entropy averaged over the response tokens of the batch (mask from
data.py). For Gemma 2/3 and tiny the logits are computed in f32 from the model's final hidden
states and the tied embedding (optional final soft-cap); the result equals the model's own
logits, tests check it. When the full (batch, seq, vocab) f32 logits would exceed CHUNK_BYTES
they are computed in sequence chunks under `jax.checkpoint`, so that tensor never exists at
once: with Gemma's 262k vocabulary it would be the largest buffer of the step (8 x 1024 x
262144 f32 = 8.6 GB). Below that (small vocabularies, short sequences) the logits are computed
in one piece and kept for the backward pass: chunking would only add the recomputation (about
5 % of the step on tiny). Other architectures use the model's logits.

The train step is a plain `jax.jit` with the trainable params and optimizer state donated,
explicit in/out shardings (batch split over the mesh, params replicated or FSDP-sharded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

CHUNK_BYTES = 256 * 2**20  # logits bytes per chunk


def _chunk_len(batch: int, seq: int, vocab: int) -> int:
    """Largest divisor of seq whose f32 logits chunk fits CHUNK_BYTES (at least 1)."""
    best = 1
    for c in range(1, seq + 1):
        if seq % c == 0 and batch * c * vocab * 4 <= CHUNK_BYTES:
            best = c
    return best


def loss_chunks(batch: int, seq: int, vocab: int) -> int:
    """How many sequence chunks chunked_loss_sums uses for these shapes: 1 (no chunking, no
    recomputation) when the full f32 logits fit CHUNK_BYTES."""
    return seq // _chunk_len(batch, seq, vocab)


def chunked_loss_sums(hidden, embedding, targets, mask, softcap=None, chunk=None):
    """(sum of masked token losses, sum of mask) from hidden states and the tied embedding.

    In chunks of `chunk` positions (default: the longest that fits CHUNK_BYTES), each under
    `jax.checkpoint`; when one chunk covers the sequence, in one piece without recomputation."""
    b, seq, d = hidden.shape
    vocab = embedding.shape[0]
    chunk = chunk or _chunk_len(b, seq, vocab)
    n = seq // chunk

    def sums(h, t, m):
        logits = jnp.einsum("bcd,vd->bcv", h, embedding, preferred_element_type=jnp.float32)
        if softcap is not None:
            logits = jnp.tanh(logits / softcap) * softcap
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, t) * m)

    if n == 1:
        return sums(hidden, targets, mask), jnp.sum(mask)

    def split(x):
        return jnp.swapaxes(x.reshape((b, n, chunk) + x.shape[2:]), 0, 1)

    one = jax.checkpoint(sums)

    def body(total, xs):
        return total + one(*xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(mask)))
    return total, jnp.sum(mask)


def full_loss_sums(logits, targets, mask):
    """(masked cross-entropy sum, token count) from the whole logits."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return jnp.sum(ce * mask), jnp.sum(mask)


def make_loss_sums(model, chunked: bool, softcap=None):
    """fn(params, batch, rngs=None) -> (masked loss sum, token count). `rngs` (e.g. {"dropout":
    key}) turns on the model's dropout (lora.py's adapters); without it the forward is deterministic."""
    def loss_sums(params, batch, rngs=None):
        if chunked:
            out = model.apply({"params": params}, batch["input"], return_hidden_states=True, rngs=rngs)
            return chunked_loss_sums(out.hidden_states, params["embedder"]["input_embedding"],
                                     batch["target"], batch["mask"], softcap)
        out = model.apply({"params": params}, batch["input"], rngs=rngs)
        return full_loss_sums(out.logits, batch["target"], batch["mask"])

    return loss_sums


def micro_batches(batch, k: int):
    """(k*b, ...) arrays -> (k, b, ...): micro-batch j holds rows j, k+j, 2k+j, ..., so each
    device's contiguous share of the batch rows stays on that device."""
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), batch)


def make_steps(model, tx, is_lora: bool, chunked: bool, softcap=None, shardings=None, compute_dtype=None,
               accum_steps: int = 1, lora_scale: float = 1.0, dropout_seed: int | None = None):
    """(train_step, eval_step), jitted.

    train_step(trainable, opt_state, frozen, batch) -> (trainable, opt_state, metrics)
    eval_step(trainable, frozen, batch) -> (loss sum, token count)
    `shardings` = (trainable, opt_state, frozen, batch, replicated) NamedSharding trees.
    LoRA adapters arrive in f32 and are cast to `compute_dtype` (the base's) for the forward;
    `lora_scale` (alpha / rank) multiplies their update (lora.scaled).
    `accum_steps` k: the batch holds k micro-batches; their gradients of the loss *sums* are
    added in a scan and divided by the total token count, so one step equals a step on the
    whole batch (the memory is one micro-batch's).
    `dropout_seed`: train with the model's dropout, keyed by (seed, batch["step"][0]) (a
    column data.Batches adds); eval never uses dropout.
    """
    loss_sums = make_loss_sums(model, chunked, softcap)
    params_of = _params_of(is_lora, lora_scale, compute_dtype)

    def sums_fn(trainable, frozen, batch, rngs):
        return loss_sums(params_of(trainable, frozen), batch, rngs)

    grads_of = _grads_of(sums_fn, _rngs_of(dropout_seed), accum_steps)

    def train_step(trainable, opt_state, frozen, batch):
        loss, count, grads = grads_of(trainable, frozen, batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, {"loss": loss, "tokens": count, "grad_norm": optax.tree.norm(grads)}

    def eval_step(trainable, frozen, batch):
        return loss_sums(params_of(trainable, frozen), batch)

    return _jitted(train_step, eval_step, shardings)


def _params_of(is_lora: bool, lora_scale: float, compute_dtype):
    """(trainable, frozen) -> the model's parameters: LoRA adapters scaled, cast and merged."""
    from . import lora

    def params_of(trainable, frozen):
        if not is_lora:
            return trainable
        if lora_scale != 1.0:
            trainable = lora.scaled(trainable, lora_scale)
        if compute_dtype is not None:
            trainable = lora.to_compute(trainable, compute_dtype)
        return lora.merge(frozen, trainable)

    return params_of


def _rngs_of(dropout_seed: int | None):
    """(batch, micro-batch i) -> the dropout keys, or None without dropout."""

    def rngs_of(batch, i=0):
        if dropout_seed is None:
            return None
        key = jax.random.fold_in(jax.random.key(dropout_seed), batch["step"][0])
        return {"dropout": jax.random.fold_in(key, i)}

    return rngs_of


def _grads_of(sums_fn, rngs_of, accum_steps: int):
    """(trainable, frozen, batch) -> (mean loss, token count, gradient of the mean loss), the
    gradients of `accum_steps` micro-batches summed in a scan."""

    def grads_of(trainable, frozen, batch):
        grad = jax.value_and_grad(sums_fn, has_aux=True)
        if accum_steps == 1:
            (total, count), g = grad(trainable, frozen, batch, rngs_of(batch))
        else:
            def one(carry, xs):
                g_sum, total, count = carry
                micro, i = xs
                (t, c), g = grad(trainable, frozen, micro, rngs_of(micro, i))
                return (jax.tree.map(jnp.add, g_sum, g), total + t, count + c), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (g, total, count), _ = jax.lax.scan(
                one, (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)),
                (micro_batches(batch, accum_steps), jnp.arange(accum_steps)))
        n = jnp.maximum(count, 1.0)
        return total / n, count, jax.tree.map(lambda x: (x / n).astype(x.dtype), g)

    return grads_of


def _jitted(train_step, eval_step, shardings):
    """Both steps jitted (the trainable state and optimizer state donated), with the shardings."""
    if shardings is None:
        return (jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step))
    p_sh, o_sh, f_sh, b_sh, rep = shardings
    metrics_sh = {"loss": rep, "tokens": rep, "grad_norm": rep}
    train = jax.jit(train_step, donate_argnums=(0, 1),
                    in_shardings=(p_sh, o_sh, f_sh, b_sh), out_shardings=(p_sh, o_sh, metrics_sh))
    evals = jax.jit(eval_step, in_shardings=(p_sh, f_sh, b_sh), out_shardings=(rep, rep))
    return train, evals


def supports_chunked_loss(model) -> bool:
    """Tied-embedding decoders whose logits are `hidden @ embedding.T` (+ soft-cap): the
    Gemma 2/3 classes and tiny. Gemma 3n/4 (per-layer inputs, other heads) use full logits."""
    base = getattr(model, "model", model)  # through the LoRA wrapper
    # The first gemma class in the MRO (remat.py subclasses the network).
    cls = next((c for c in type(base).__mro__ if c.__module__.startswith("gemma.")), type(base))
    return cls.__module__ in ("gemma.gm.nn._transformer", "gemma.gm.nn._gemma")
