"""The memory / step-time estimate: importable without jax, and checked against the real step.

The reference is XLA's memory plan of the compiled train step (arguments + outputs - donated
aliases + temporaries), which is the peak the step needs on the device. On a CPU the backend
has no runtime memory statistics, so the compiler's plan is the measurement available here.
The estimate is a closed formula: it cannot see XLA's fusion and buffer reuse, so we accept a
factor of 1.5 either way (measured on tiny: 0.94-1.18 over batch x sequence from 8 x 128 to
2 x 1024; docs/estimate.md has the numbers for the real sizes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from gemma_ft_widgets import models
from gemma_ft_widgets.estimate import Estimate, estimate, format_bytes, lora_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importable_without_jax():
    code = ("import sys; from gemma_ft_widgets.estimate import estimate; "
            "e = estimate({'model': 'gemma3-1b'}); print(e.summary()); "
            "assert 'jax' not in sys.modules and 'gemma' not in sys.modules, 'jax imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "accelerator memory" in out.stdout


def test_fields_add_up_and_summary_reads_well():
    e = estimate({"model": "gemma3-1b", "method": "lora", "lora_rank": 8, "batch_size": 4,
                  "max_seq_len": 512})
    assert isinstance(e, Estimate)
    assert e.total_bytes == e.weights_bytes + e.lora_bytes + e.optimizer_bytes + e.activations_bytes
    assert e.optimizer_bytes == 3 * e.lora_bytes  # Adam's two moments + the gradients
    assert e.trainable_params == lora_params(models.MODELS["gemma3-1b"], 8)
    assert e.weights_bytes == models.MODELS["gemma3-1b"].params * 2  # bf16 on an accelerator
    assert e.lora_bytes == e.trainable_params * 4  # adapters are f32
    assert re.fullmatch(r"≈ [\d.]+ GB accelerator memory \(weights [\d.]+ GB, LoRA [\d.]+ MB, "
                        r"Adam [\d.]+ MB, activations [\d.]+ [GM]B\); ≈ [\d.]+ m?s/step on GPU", e.summary()), e.summary()
    full = estimate({"model": "gemma3-1b", "method": "full", "batch_size": 4, "max_seq_len": 512})
    assert full.trainable_params == full.params and full.optimizer_bytes == 3 * full.weights_bytes
    assert "LoRA" not in full.summary() and full.step_time_s > e.step_time_s
    # Memory grows with batch and (quadratically, through attention) with sequence length.
    longer = estimate({"model": "gemma3-1b", "batch_size": 4, "max_seq_len": 1024})
    assert longer.activations_bytes > 2 * e.activations_bytes
    assert estimate({"model": "gemma3-1b", "dtype": "float32"}).bytes_per_param == 4
    assert format_bytes(2.1e9) == "2.1 GB" and format_bytes(4e6) == "4.0 MB"
    # Data parallel over 4 devices splits the batch; FSDP also splits the weights.
    dp = estimate({"model": "gemma3-1b", "batch_size": 8, "max_seq_len": 512}, num_devices=4)
    one = estimate({"model": "gemma3-1b", "batch_size": 8, "max_seq_len": 512})
    assert dp.weights_bytes == one.weights_bytes and dp.activations_bytes < one.activations_bytes / 3
    fsdp = estimate({"model": "gemma3-1b", "batch_size": 8, "max_seq_len": 512, "fsdp": True}, num_devices=4)
    assert fsdp.weights_bytes == one.weights_bytes // 4
    assert e.fits(80 * 10**9) and not estimate({"model": "gemma3-27b", "method": "full"}).fits(16 * 10**9)


def test_estimate_accepts_a_training_config_and_an_exported_checkpoint(tmp_path):
    from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path

    cfg = TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path()})
    e = estimate(cfg)
    assert e.model == "tiny" and e.device == "cpu" and e.bytes_per_param == 4
    (tmp_path / "gemma_ft_model.json").write_text(json.dumps({"architecture": "gemma3-270m"}))
    assert estimate({"model": str(tmp_path)}).model == "gemma3-270m"


@pytest.mark.slow
@pytest.mark.parametrize("method,batch,seq", [("lora", 8, 128), ("full", 8, 128), ("lora", 2, 512)])
def test_estimate_tracks_the_compiled_step_on_tiny(tmp_path, method, batch, seq):
    from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
    from gemma_ft_widgets.train import loop

    cfg = TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path(), "method": method,
                                    "batch_size": batch, "max_seq_len": seq, "max_steps": 20})
    tr = loop.Trainer(str(tmp_path), cfg, log=lambda m: None)
    tr.setup()
    tr.compile()
    measured = tr.memory_analysis["memory"]["peak_estimate_bytes"]
    e = estimate(cfg, device="cpu")
    # The argument part is exact: weights + trainable + optimizer state (+ the batch).
    assert abs(tr.memory_analysis["memory"]["argument_size_in_bytes"]
               - (e.weights_bytes + e.lora_bytes + e.optimizer_bytes - e.gradients_bytes)) < 0.1 * measured
    ratio = e.total_bytes / measured
    print(f"tiny {method} {batch}x{seq}: estimate {e.total_bytes:,} vs XLA plan {measured:,} ({ratio:.2f}x)")
    assert 1 / 1.5 < ratio < 1.5
    if method == "lora":  # the adapter count the trainer logs is the estimate's formula
        assert tr.trainable_count == e.trainable_params


def test_quantization_and_remat_shrink_the_estimate_in_the_expected_order():
    base = {"model": "gemma3-4b", "method": "lora", "batch_size": 4, "max_seq_len": 512}
    e = {(q, r): estimate({**base, "quantization": q, "remat": r}, device="gpu")
         for q in ("none", "int8", "int4") for r in ("none", "block")}
    assert e["int4", "none"].weights_bytes < e["int8", "none"].weights_bytes < e["none", "none"].weights_bytes
    # Without remat a quantized run also keeps the dequantized weights for the backward pass.
    assert e["int8", "none"].activations_bytes > e["none", "none"].activations_bytes
    for q in ("none", "int8", "int4"):
        assert e[q, "block"].activations_bytes < e[q, "none"].activations_bytes / 3
    assert e["int4", "block"].total_bytes < 16e9 * 0.9 < e["none", "none"].total_bytes  # a T4 fits only then
    full = estimate({**base, "method": "full", "quantization": "int8"}, device="gpu")
    assert full.weights_bytes == estimate({**base, "method": "full"}, device="gpu").weights_bytes
