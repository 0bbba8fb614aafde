"""The pinned trainer stack: fails loudly when an upgrade breaks what the trainer relies on.

Each assertion names an API the trainer uses (gemma_ft_widgets/train/). If one fails after a
dependency change, the message says which piece moved.
"""

from __future__ import annotations

import importlib
import os

import jax  # required: a missing jax is a broken install and must fail, not skip


def test_versions_import():
    for name in ("jax", "flax", "optax", "orbax.checkpoint", "sentencepiece", "kagglehub", "gemma"):
        importlib.import_module(name)


def test_gemma_apis_the_trainer_uses():
    from gemma import gm, peft

    for attr in ("Transformer", "LoRA", "AttentionType", "config", "Gemma2_2B", "Gemma3_1B", "Gemma3_4B"):
        assert hasattr(gm.nn, attr), f"gm.nn.{attr} is gone"
    assert hasattr(gm.nn.config, "TransformerConfig") and hasattr(gm.nn.config, "make_attention_layers_types")
    for attr in ("load_params", "save_params"):
        assert hasattr(gm.ckpts, attr), f"gm.ckpts.{attr} is gone"
    for attr in ("Gemma2Tokenizer", "Gemma3Tokenizer", "Sampler", "ChatSampler"):
        assert hasattr(gm.text, attr), f"gm.text.{attr} is gone"
    assert hasattr(peft, "split_params") and hasattr(peft, "merge_params")
    from gemma.gm.nn import _lora  # the trainer intercepts _LoRAEinsum to fold adapters
    from gemma.peft import _einsum_utils

    assert hasattr(_lora, "_LoRAEinsum"), "gemma.gm.nn._lora._LoRAEinsum is gone (lora.merge_into_base)"
    assert hasattr(_einsum_utils, "get_lora_einsum_str_and_shapes")


def test_tiny_model_builds_runs_and_wraps_in_lora():
    import jax.numpy as jnp
    from gemma import peft

    from gemma_ft_widgets import models as table
    from gemma_ft_widgets.train import lora, models

    loaded = models.load_model("tiny", seed=0, dtype_name="float32")
    tokens = jnp.array([[2, 105, 10, 20, 106, 0, 0, 0]], jnp.int32)
    out = loaded.model.apply({"params": loaded.params}, tokens, return_hidden_states=True)
    assert out.logits.shape == (1, 8, table.TINY.vocab_size)
    assert out.hidden_states.shape == (1, 8, table.TINY.embed_dim)

    lora_model = lora.wrap(loaded.model, rank=4)
    adapters = lora.init_lora_params(lora_model, seed=0)
    frozen, only_lora = peft.split_params(lora.merge(loaded.params, adapters))
    assert jax.tree.structure(only_lora) == jax.tree.structure(adapters)
    same = lora_model.apply({"params": lora.merge(frozen, adapters)}, tokens).logits
    # B starts at zero: the wrapped model equals the base.
    assert jnp.allclose(same, out.logits, atol=1e-5)


def test_tiny_tokenizer_has_gemma_special_ids():
    from gemma_ft_widgets.train import models

    path = models.tiny_tokenizer_path()
    assert os.path.isfile(path)
    tok = models.make_tokenizer("tiny", path)
    assert tok.vocab_size == 512
    sp = tok.special_tokens
    assert (sp.PAD, sp.EOS, sp.BOS, sp.UNK, sp.START_OF_TURN, sp.END_OF_TURN) == (0, 1, 2, 3, 105, 106)
    text = "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n"
    ids = tok.encode(text)
    assert ids[0] == 105 and ids.count(105) == 2 and 106 in ids
    assert tok.decode(ids) == text  # newlines survive (identity normalisation)
