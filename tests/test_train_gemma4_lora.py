"""LoRA on Gemma 4: adapters on its attention and MLP einsums (gm.nn.LoRA alone finds none)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from gemma_ft_widgets.train import lora, models, optim, step

RANK = 4


def small_gemma4():
    """Gemma 4 E2B's layer types (per-layer inputs, a sliding and a global layer, its global
    key size and rope split) at toy widths, 2 layers, a 512-token vocabulary."""
    from gemma import gm

    cfg = gm.nn.Gemma4_E2B.config
    cfg = dataclasses.replace(
        cfg, num_embed=512, embed_dim=64, hidden_dim=128, num_heads=2, head_dim=32, num_kv_heads=1,
        global_key_size=64, sliding_window_size=16, per_layer_input_dim=16, kv_cache_sharing_config=None,
        override_kv_shared_ffw_hidden=None, attention_types=cfg.attention_types[3:5],
        vision_encoder=None, audio_encoder=None)
    return gm.nn.Gemma4_E2B(config=cfg, dtype=jnp.float32, text_only=True)


def lora_count_formula(einsums, frozen) -> int:
    """rank x (input size + output size) of every adapted weight: the input dims are the
    weight's dims contracted with the activations, the output dims the rest."""
    total = 0
    for path, (eqn, weight_name) in einsums.items():
        node = frozen
        for k in path[:-1]:
            node = node[k]
        shape = node[weight_name].shape
        lhs, w = eqn.replace(" ", "").split("->")[0].split(",")
        d_in = math.prod(n for c, n in zip(w, shape) if c in lhs)
        d_out = math.prod(n for c, n in zip(w, shape) if c not in lhs)
        total += RANK * (d_in + d_out)
    return total


@pytest.mark.slow
def test_small_gemma4_lora_has_the_formulas_adapters_and_its_loss_falls():
    net = small_gemma4()
    frozen = models.init_params(net, 0)
    model = lora.wrap(net, RANK)
    adapters = lora.init_lora_params(model, 0)
    einsums = lora.adapter_einsums(model, lora.merge(frozen, adapters))
    names = {"/".join(p) for p in einsums}
    for part in ("attn/q_einsum", "attn/kv_einsum", "attn/attn_vec_einsum", "mlp/_LoRAEinsum_gating_einsum",
                 "mlp/_LoRAEinsum_linear"):
        assert any(part in n for n in names), (part, names)
    n = models.param_count(adapters)
    assert n == lora_count_formula(einsums, frozen) > 0

    tx, _ = optim.make_optimizer(1e-2, 0, 40)
    train_step, _ = step.make_steps(model, tx, True, step.supports_chunked_loss(net))
    # A repeating 7-token pattern: learnable through attention with the base frozen.
    toks = (np.arange(4 * 33).reshape(4, 33) % 7 * 13 + 5).astype(np.int32)
    batch = {"input": jnp.asarray(toks[:, :-1]), "target": jnp.asarray(toks[:, 1:]),
             "mask": jnp.ones((4, 32), jnp.float32)}
    opt_state = tx.init(adapters)
    losses = []
    for _ in range(40):
        adapters, opt_state, metrics = train_step(adapters, opt_state, frozen, batch)
        losses.append(float(metrics["loss"]))
    # It falls by ~0.6 nats, then plateaus: the frozen random embedding caps what adapters can do.
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.4, losses[::8]
