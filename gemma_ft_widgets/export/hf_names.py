"""gemma's parameter tree and TransformerConfig in Hugging Face's terms (numpy only).

Weights: gemma stores attention and MLP weights as fused einsum tensors; Hugging Face's
Gemma 2 / Gemma 3 modules are plain `nn.Linear` weights of shape (out, in):

    attn/q_einsum/w          (N, D, H)     -> q_proj (N*H, D)
    attn/kv_einsum/w         (2, K, D, H)  -> k_proj, v_proj (K*H, D)
    attn/qkv_einsum/w        (3, N, D, H)  -> q_proj, k_proj, v_proj   (when N == K)
    attn/attn_vec_einsum/w   (N, H, D)     -> o_proj (D, N*H)
    mlp/gating_einsum        (2, F, D)     -> gate_proj, up_proj (F, D)   [(2, D, F) untransposed]
    mlp/linear               (F, D)        -> down_proj (D, F)

Norm scales copy as they are: both libraries compute x * (1 + scale). The embedding is tied
(no lm_head) and scaled by sqrt(D) on input in both. The same map is what the GGUF writer
starts from (llama.cpp's own converter reads these HF names).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class UnsupportedModel(ValueError):
    """The architecture has a feature the target format cannot express exactly."""


def _layer_count(params) -> int:
    return sum(1 for k in params if k.startswith("layer_"))


def attention_kinds(config) -> list[str]:
    """'sliding_attention' / 'full_attention' per layer, from gemma's AttentionType enum."""
    kinds = []
    for t in config.attention_types:
        name = getattr(t, "name", str(t))
        if name == "LOCAL_SLIDING":
            kinds.append("sliding_attention")
        elif name == "GLOBAL":
            kinds.append("full_attention")
        else:
            raise UnsupportedModel(f"attention type {name} has no Hugging Face equivalent")
    return kinds


def query_pre_attn_scalar(config) -> float:
    """HF scales queries by query_pre_attn_scalar**-0.5; gemma multiplies by config's value."""
    value = 1.0 / float(config.query_pre_attn_scalar()) ** 2
    return int(round(value)) if abs(value - round(value)) < 1e-6 else value


def architecture(family: str) -> str:
    """The transformers class for a model family; UnsupportedModel for a family it has none for here."""
    if family in ("tiny", "gemma3"):
        return "Gemma3ForCausalLM"
    if family == "gemma2":
        return "Gemma2ForCausalLM"
    raise UnsupportedModel(
        f"export of {family} models to Hugging Face is not supported yet (Gemma 2 and Gemma 3 text are)")


def config_kwargs(config, family: str, max_positions: int | None = None) -> dict:
    """Keyword arguments for transformers' Gemma3TextConfig / Gemma2Config."""
    arch = architecture(family)
    if getattr(config, "vision_encoder", None) is not None:
        raise UnsupportedModel("the vision encoder is not exported; build the network text-only")
    kinds = attention_kinds(config)
    kw = dict(
        vocab_size=config.num_embed,
        hidden_size=config.embed_dim,
        intermediate_size=config.hidden_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        query_pre_attn_scalar=query_pre_attn_scalar(config),
        sliding_window=config.sliding_window_size or 4096,
        layer_types=kinds,
        final_logit_softcapping=config.final_logit_softcap,
        attn_logit_softcapping=config.attn_logits_soft_cap,
        tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=[1, 106], bos_token_id=2,
        max_position_embeddings=max_positions or (8192 if arch == "Gemma2ForCausalLM" else 32768),
    )
    if not (config.use_post_attn_norm and config.use_post_ffw_norm):
        raise UnsupportedModel("Hugging Face's Gemma 2/3 layers always have post-attention and post-FFW norms")
    if arch == "Gemma3ForCausalLM":
        if not config.use_qk_norm:
            raise UnsupportedModel("Gemma3ForCausalLM always normalises queries and keys (qk-norm)")

        def rope(base, factor):
            return ({"rope_type": "default", "rope_theta": float(base)} if factor == 1.0 else
                    {"rope_type": "linear", "factor": float(factor), "rope_theta": float(base)})

        kw["rope_parameters"] = {
            "sliding_attention": rope(config.local_base_frequency, config.local_scale_factor),
            "full_attention": rope(config.global_base_frequency, config.global_scale_factor),
        }
    else:
        if config.use_qk_norm:
            raise UnsupportedModel("Gemma2ForCausalLM has no qk-norm")
        if (config.local_base_frequency != config.global_base_frequency
                or config.local_scale_factor != 1.0 or config.global_scale_factor != 1.0):
            raise UnsupportedModel("Gemma2ForCausalLM has one rope base and no rope scaling")
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config.global_base_frequency)}
    return kw


def hf_tensors(params, config) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array) for every weight, without the `model.` prefix. Arrays keep their dtype."""
    D, N, K, H = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    a = np.asarray
    yield "embed_tokens.weight", a(params["embedder"]["input_embedding"])
    yield "norm.weight", a(params["final_norm"]["scale"])
    for i in range(_layer_count(params)):
        p, pre = params[f"layer_{i}"], f"layers.{i}."
        attn = p["attn"]
        if "qkv_einsum" in attn:
            q, k, v = a(attn["qkv_einsum"]["w"])
        else:
            q = a(attn["q_einsum"]["w"])
            k, v = a(attn["kv_einsum"]["w"])
        yield pre + "self_attn.q_proj.weight", q.transpose(0, 2, 1).reshape(N * H, D)
        yield pre + "self_attn.k_proj.weight", k.transpose(0, 2, 1).reshape(K * H, D)
        yield pre + "self_attn.v_proj.weight", v.transpose(0, 2, 1).reshape(K * H, D)
        yield pre + "self_attn.o_proj.weight", a(attn["attn_vec_einsum"]["w"]).reshape(N * H, D).T
        if "_query_norm" in attn:
            yield pre + "self_attn.q_norm.weight", a(attn["_query_norm"]["scale"])
            yield pre + "self_attn.k_norm.weight", a(attn["_key_norm"]["scale"])
        gate, up = a(p["mlp"]["gating_einsum"])
        if not config.transpose_gating_einsum:  # stored (2, D, F)
            gate, up = gate.T, up.T
        yield pre + "mlp.gate_proj.weight", gate
        yield pre + "mlp.up_proj.weight", up
        yield pre + "mlp.down_proj.weight", a(p["mlp"]["linear"]).T
        yield pre + "input_layernorm.weight", a(p["pre_attention_norm"]["scale"])
        yield pre + "post_attention_layernorm.weight", a(p["post_attention_norm"]["scale"])
        yield pre + "pre_feedforward_layernorm.weight", a(p["pre_ffw_norm"]["scale"])
        yield pre + "post_feedforward_layernorm.weight", a(p["post_ffw_norm"]["scale"])

