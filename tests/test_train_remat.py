"""remat: "block": every transformer block recomputed in the backward pass, same gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_ft_widgets import models as table
from gemma_ft_widgets.train import lora, models, remat, step


def two_layer_gemma3():
    """Gemma 3 1B's real block (width 1152, 4 heads of 256, MLP 6912, local + global attention)
    with 2 layers and a 512-token vocabulary, so it runs in seconds on a CPU."""
    from gemma import gm

    cfg = gm.nn.Gemma3_1B.config
    cfg = dataclasses.replace(cfg, num_embed=512, vision_encoder=None,
                              attention_types=cfg.attention_types[4:6])
    assert {t.name for t in cfg.attention_types} == {"LOCAL_SLIDING", "GLOBAL"}
    return gm.nn.Gemma3_1B(config=cfg, dtype=jnp.float32)


def grads_and_hlo(lora_model, frozen, adapters, tokens):
    def loss(ad):
        out = lora_model.apply({"params": lora.merge(frozen, ad)}, tokens)
        return jnp.mean(jax.nn.log_softmax(out.logits)[..., 7])

    fn = jax.jit(jax.grad(loss))
    return fn(adapters), fn.lower(adapters).as_text()


@pytest.mark.parametrize("arch", ["tiny", "gemma3-2-layers"])
def test_block_remat_gives_the_same_gradients(arch):
    net = models.build_network(table.TINY) if arch == "tiny" else two_layer_gemma3()
    frozen = models.init_params(net, 0)
    plain = lora.wrap(net, 4)
    # Nonzero B, so the gradients of A are not zero.
    adapters = jax.tree.map(lambda x: x + 0.01, lora.init_lora_params(plain, 0))
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 512)

    rematerialised = lora.wrap(remat.apply(net, "block"), 4)
    assert remat.is_rematerialised(rematerialised) and not remat.is_rematerialised(plain)
    g_remat, hlo_remat = grads_and_hlo(rematerialised, frozen, adapters, tokens)
    g_plain, hlo_plain = grads_and_hlo(plain, frozen, adapters, tokens)
    # Recomputation shows in the program as one optimization barrier per block and layer count.
    n_layers = len([k for k in frozen if k.startswith("layer_")])
    assert hlo_remat.count("optimization_barrier") >= n_layers
    assert "optimization_barrier" not in hlo_plain
    flat_r, flat_p = jax.tree.leaves(g_remat), jax.tree.leaves(g_plain)
    assert len(flat_r) == len(flat_p) and any(np.abs(np.asarray(g)).max() > 0 for g in flat_p)
    for a, b in zip(flat_r, flat_p):
        # The same f32 operations in the same order: equal up to XLA's fusion choices.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_remat_keeps_the_parameter_tree_and_the_chunked_loss():
    net = models.build_network(table.TINY)
    r = remat.apply(net, "block")
    a = jax.eval_shape(lambda: models.init_params_shape(net))
    b = jax.eval_shape(lambda: models.init_params_shape(r))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert step.supports_chunked_loss(lora.wrap(r, 4))
    with pytest.raises(ValueError, match="remat must be one of"):
        remat.apply(net, "layers")
