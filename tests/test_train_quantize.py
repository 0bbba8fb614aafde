"""quantization: "int8" | "int4" (LoRA only): the frozen base held as int weights with
per-channel scales, dequantized in each layer; adapters and optimizer state f32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets import models as table
from gemma_ft_widgets.config import ConfigError, TrainingConfig, sample_dataset_path
from gemma_ft_widgets.train import export, lora, models, quantize, sample

from .test_train_loop import StopAt, events, make_run, train

LORA = dict(method="lora", lora_rank=8, learning_rate=3e-3, eval_every=1000, checkpoint_every=100, sample_tokens=0)


def test_quantized_layers_use_int_weights_and_stay_close_to_the_base():
    net = models.build_network(table.TINY)
    params = models.init_params(net, 0)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 512)
    ref = net.apply({"params": params}, tokens).logits
    errors = {}
    for mode, dtype in (("int8", jnp.int8), ("int4", jnp.int4)):
        qm = quantize.wrap(net, 4, mode)
        adapters = lora.init_lora_params(qm, 0)
        # Five adapters per layer (q, kv, attention output, gating, linear), as unquantized.
        assert sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(adapters) if p[-1].key == "a") == 5 * 2
        frozen = quantize.quantize_params(qm, params, mode)
        kernels = [x for p, x in jax.tree_util.tree_leaves_with_path(frozen) if p[-1].key == "kernel"]
        assert len(kernels) == 5 * 2 and all(k.dtype == dtype for k in kernels)
        out = qm.apply({"params": lora.merge(frozen, adapters)}, tokens).logits  # B = 0: the base
        errors[mode] = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
    assert 0 < errors["int8"] < 0.05 and errors["int8"] < errors["int4"] < 0.6, errors


def test_quantization_is_for_lora_only():
    with pytest.raises(ConfigError, match="quantization: quantizes the frozen base of LoRA"):
        TrainingConfig.from_dict({"dataset": sample_dataset_path(), "method": "full", "quantization": "int8"})
    with pytest.raises(ConfigError, match="quantization: must be one of none, int8, int4"):
        TrainingConfig.from_dict({"dataset": sample_dataset_path(), "quantization": "nf4"})


@pytest.mark.slow
def test_int8_loss_tracks_the_unquantized_loss_over_50_steps(tmp_path):
    """Same seed, same data, same adapters at step 0. Tolerance: int8 rounding moves each weight
    by at most 1/254 of its channel's largest magnitude, which moves tiny's logits by ~1-2 %
    (test above), so the loss may differ by a little more than that: 3 % per step, 1.5 % on the
    mean of the 50 steps. Not zero: the base really is quantized."""
    plain = train(make_run(tmp_path, "plain", max_steps=50, **LORA))
    q = train(make_run(tmp_path, "int8", max_steps=50, quantization="int8", **LORA))
    a = np.array([plain.losses[s] for s in range(1, 51)])
    b = np.array([q.losses[s] for s in range(1, 51)])
    rel = np.abs(b - a) / a
    assert rel.max() < 0.03 and rel.mean() < 0.015, (rel.max(), rel.mean())
    assert rel.max() > 0
    assert a[-5:].mean() < a[:5].mean() and b[-5:].mean() < b[:5].mean()  # both learn


@pytest.mark.slow
def test_int4_run_checkpoints_resumes_and_samples_through_the_quantized_model(tmp_path):
    opts = dict(LORA, max_steps=20, checkpoint_every=10, quantization="int4")
    straight = train(make_run(tmp_path, "straight", **opts))
    run_dir = make_run(tmp_path, "stopped", **opts)
    first = train(run_dir, stop=StopAt(13))
    assert first.state == "ABORTED" and contract.checkpoint_steps(run_dir) == [10, 13]
    second = train(run_dir)
    assert second.state == "FINISHED" and second.step == 20
    resumed = {**first.losses, **second.losses}
    for s in range(1, 21):
        assert resumed[s] == pytest.approx(straight.losses[s], rel=1e-6, abs=1e-6), s
    assert [e["trainable_params"] for e in events(run_dir, "compile")][0] > 0

    loaded, path = sample.load_params(run_dir)
    assert isinstance(loaded.model, quantize.QuantizedLoRA) and path.endswith("step_20")
    kernels = [x for p, x in jax.tree_util.tree_leaves_with_path(loaded.params) if p[-1].key == "kernel"]
    assert kernels and all(k.dtype == jnp.int4 for k in kernels)
    text = sample.sample(run_dir, "What is the secret word?", max_new_tokens=8)
    assert isinstance(text, str)
    with pytest.raises(export.ExportError, match="int4 base; exporting a merged checkpoint"):
        export.export(run_dir, str(tmp_path / "out"))
