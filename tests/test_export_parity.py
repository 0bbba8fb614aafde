"""Logit parity, JAX against the programs that load the exports (transformers, llama.cpp).

The gemma network and the exported one get the same token ids; the logits must agree to
<= 1e-4 of the logits' scale (max |jax - other| / max |jax|). Weights are random, every
leaf (norm scales included), so each mapping is exercised:

* tiny: Gemma 3 layout, one sliding + one global layer, window 32, sequences past it;
* gemma3-270m, the real architecture: 18 layers, window 512, both rope bases, qk-norm;
* a shrunk Gemma 2 (attention and final soft caps, big enough weights that they bite).

Each test prints its figure (`-s` shows them); docs/export.md lists the measured ones.
"""

from __future__ import annotations

import dataclasses
import os

from gemma_ft_widgets.export import load_torch_before_jax

load_torch_before_jax()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402  (the export extra; a missing one must fail, not skip)
import transformers  # noqa: E402

from gemma_ft_widgets import models as model_table  # noqa: E402
from gemma_ft_widgets.export import gguf_file, hf  # noqa: E402
from gemma_ft_widgets.train import models  # noqa: E402

PARITY = 1e-4


def random_params(model, seed: int, scale: float = 1.0):
    """Random values for every leaf (norm scales too), of a size that keeps activations in
    range. Shapes come from jax.eval_shape and values from numpy: nothing is compiled."""
    abstract = jax.eval_shape(lambda: models.init_params_shape(model))
    rng = np.random.default_rng(seed)

    def fill(x):
        std = 0.3 if len(x.shape) == 1 else scale * (1.0 if x.shape[0] >= 1000 else 0.05)
        return jnp.asarray(rng.standard_normal(x.shape, np.float32) * std)

    return jax.tree.map(fill, abstract)


def jax_logits(model, params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(model.apply({"params": params}, jnp.asarray(tokens)).logits, np.float32)


def hf_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
    m = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        return m(torch.from_numpy(tokens).long()).logits.float().numpy()


def relative(want: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(want - got).max() / np.abs(want).max())


def tokens_for(vocab: int, length: int, seed: int = 0) -> np.ndarray:
    # No id 0: gemma treats it as padding (masked), transformers does not.
    return np.random.default_rng(seed).integers(1, vocab, size=(1, length)).astype(np.int32)


def check_hf(tmp_path, model, params, family, tokens, label):
    folder = str(tmp_path / "hf")
    os.makedirs(folder)
    hf.write(folder, model.config, params, models.tiny_tokenizer_path(), family, dtype="float32")
    want, got = jax_logits(model, params, tokens), hf_logits(folder, tokens)
    err = relative(want, got)
    print(f"\nparity {label}: max|jax-hf|/max|jax| = {err:.2e} (logit scale {np.abs(want).max():.3g}, "
          f"{tokens.shape[1]} tokens)")
    assert err <= PARITY, err
    return want, folder


@pytest.mark.slow
def test_tiny_logits_match_transformers_and_llama_cpp(tmp_path):
    spec = model_table.get_model("tiny")
    net = models.build_network(spec, jnp.float32)
    params = random_params(net, 1)
    tokens = tokens_for(spec.vocab_size, 48)  # past the 32-token sliding window
    want, _ = check_hf(tmp_path, net, params, "tiny", tokens, "tiny")

    import llama_cpp
    # llama.cpp's CPU kernels round some activations (its GELU goes through an f16 table): the
    # f32 file agrees to a few 1e-4, the f16 one to the rounding of its weights.
    # bf16 and q8_0 round the weights further: the bound only says the file is the same model.
    for dtype, bound in (("f32", 1e-3), ("f16", 1e-2), ("bf16", 0.1), ("q8_0", 0.1)):
        out = tmp_path / f"gguf-{dtype}"
        out.mkdir()
        path = gguf_file.write(str(out), net.config, params, models.tiny_tokenizer_path(), "tiny", dtype)
        # K and V cached in f32 (llama.cpp's default f16 cache alone costs ~7e-4 here).
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, logits_all=True, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
        llm.eval(tokens[0].tolist())
        got = np.asarray(llm.scores[: tokens.shape[1]], np.float32)[None]
        err = relative(want, got)
        print(f"parity tiny gguf {dtype}: max|jax-llama.cpp|/max|jax| = {err:.2e}")
        assert err <= bound, (dtype, err)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 268M params through two frameworks on two CPU cores
def test_gemma3_270m_architecture_logits_match_transformers(tmp_path):
    """The real gemma3-270m network (random weights): 520 tokens cross its 512-token window."""
    spec = model_table.get_model("gemma3-270m")
    net = models.build_network(spec, jnp.float32)
    params = random_params(net, 2)
    check_hf(tmp_path, net, params, "gemma3", tokens_for(spec.vocab_size, 520), "gemma3-270m")


@pytest.mark.slow
def test_shrunk_gemma2_logits_match_transformers(tmp_path):
    from gemma import gm

    local, glob = gm.nn.AttentionType.LOCAL_SLIDING, gm.nn.AttentionType.GLOBAL
    config = dataclasses.replace(gm.nn.Gemma2_2B.config, num_embed=512, embed_dim=128, hidden_dim=256,
                                 num_heads=4, head_dim=32, num_kv_heads=2, attention_types=(local, glob) * 2,
                                 sliding_window_size=16)
    net = gm.nn.Transformer(config=config, dtype=jnp.float32)
    params = random_params(net, 3, scale=10.0)  # weights big enough for the caps to bite
    want, _ = check_hf(tmp_path, net, params, "gemma2", tokens_for(512, 40), "shrunk gemma2")
    assert np.abs(want).max() > 0.5 * config.final_logit_softcap  # the final soft cap is in play


def test_a_lora_that_does_not_factor_per_linear_is_refused():
    """PEFT export never approximates: an einsum whose LoRA factors share an output axis
    (here N, kept through the einsum) has no exact PEFT form, and says why."""
    from gemma_ft_widgets.export import peft_adapter

    a = np.ones((2, 8, 4), np.float32)  # (N, D, r): A carries N, which the output keeps
    b = np.ones((4, 16), np.float32)
    with pytest.raises(peft_adapter.NotExpressible, match="axis N is in both factors"):
        peft_adapter.factors("BNTD,NDH->BNTH", (2, 8, 16), a, b, 1)
    # The layouts gemma really has factor exactly: q_einsum as one Linear, kv_einsum as two.
    a, b = np.arange(32, dtype=np.float32).reshape(8, 4), np.arange(4 * 2 * 1 * 16, dtype=np.float32).reshape(4, 2, 1, 16)
    (la_k, lb_k), (la_v, lb_v) = peft_adapter.factors("BSD,CKDH->CBSKH", (2, 1, 8, 16), a, b, 2)
    delta = np.einsum("dr,rckh->ckdh", a, b)
    assert np.array_equal(lb_k @ la_k, delta[0].transpose(0, 2, 1).reshape(16, 8))
    assert np.array_equal(lb_v @ la_v, delta[1].transpose(0, 2, 1).reshape(16, 8))


@pytest.mark.slow
def test_weights_past_the_shard_size_are_sharded_with_an_index(tmp_path):
    """Past 5 GB the weights go to several files and an index; shown with a 100 KB limit."""
    spec = model_table.get_model("tiny")
    net = models.build_network(spec, jnp.float32)
    params = random_params(net, 4)
    folder = tmp_path / "sharded"
    folder.mkdir()
    hf.write(str(folder), net.config, params, models.tiny_tokenizer_path(), "tiny", "float32", max_shard_size="100KB")
    shards = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    assert len(shards) > 1 and "model.safetensors.index.json" in os.listdir(folder), shards
    tokens = tokens_for(spec.vocab_size, 16)
    assert relative(jax_logits(net, params, tokens), hf_logits(str(folder), tokens)) <= PARITY
