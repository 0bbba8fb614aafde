"""Write one GGUF file for llama.cpp / Ollama (with the `gguf` package, llama.cpp's own writer)
and an Ollama Modelfile beside it.

Starts from the Hugging Face names (hf_names) and renames them with gguf's TensorNameMap, as
llama.cpp's convert_hf_to_gguf.py does; norms are stored as 1 + scale (llama.cpp's RMSNorm
multiplies by the weight alone). What llama.cpp cannot be told is checked and refused rather
than written approximately: it derives the query scale from the layer count (27B-style
n_embd/n_head at 46 or 62 layers, head_dim otherwise) and Gemma 2 always soft-caps attention.
The per-layer sliding/global pattern, both rope bases and the soft caps are written as keys.
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import hf_names, templates

DTYPES = ("f16", "bf16", "f32", "q8_0")
ARCH = {"Gemma3ForCausalLM": "gemma3", "Gemma2ForCausalLM": "gemma2"}
_27B_LAYERS = {"gemma3": 62, "gemma2": 46}


def file_name(dtype: str) -> str:
    """The GGUF file's name for `dtype`."""
    return f"model-{dtype}.gguf"


def check_representable(config, family: str) -> str:
    """The llama.cpp architecture name, or UnsupportedModel saying what cannot be expressed."""
    arch = ARCH[hf_names.architecture(family)]
    kw = hf_names.config_kwargs(config, family)
    if config.num_layers == _27B_LAYERS[arch]:
        expected = (config.embed_dim // config.num_heads) ** -0.5
    else:
        expected = config.head_dim ** -0.5
    if not math.isclose(float(config.query_pre_attn_scalar()), expected, rel_tol=1e-6):
        raise hf_names.UnsupportedModel(
            f"llama.cpp derives the query scale from the layer count ({expected:.6g} for "
            f"{config.num_layers} layers); this model uses {float(config.query_pre_attn_scalar()):.6g}")
    if arch == "gemma2" and kw["attn_logit_softcapping"] is None:
        raise hf_names.UnsupportedModel("llama.cpp always soft-caps Gemma 2 attention; this model does not")
    if arch == "gemma3" and kw["attn_logit_softcapping"] is not None:
        raise hf_names.UnsupportedModel("llama.cpp's Gemma 3 has no attention soft cap; this model has one")
    if arch == "gemma3" and config.local_scale_factor != 1.0:
        raise hf_names.UnsupportedModel("llama.cpp's Gemma 3 scales rope on global layers only")
    return arch


def sentencepiece_vocab(tokenizer_path: str, rows: int):
    """(tokens, scores, types) from the sentencepiece model, padded to the embedding's rows with
    unused `[PADn]` tokens (sentencepiece's piece types are gguf's TokenType values)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    with open(tokenizer_path, "rb") as f:
        proto.ParseFromString(f.read())
    tokens = [p.piece.encode("utf-8") for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]
    if len(tokens) > rows:
        raise hf_names.UnsupportedModel(f"the tokenizer has {len(tokens)} pieces but the embedding only {rows} rows")
    for i in range(len(tokens), rows):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(5)  # UNUSED
    return tokens, scores, types


def write(out_dir: str, config, params, tokenizer_path: str, family: str, dtype: str = "f16",
          say=lambda msg: None) -> str:
    """Write `model-<dtype>.gguf` and `Modelfile` into `out_dir`; returns the GGUF path."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    arch = check_representable(config, family)
    path = os.path.join(out_dir, file_name(dtype))
    w = gguf.GGUFWriter(path, arch)
    _add_hyperparameters(w, gguf, config, family, dtype)
    say("writing the vocabulary and chat template")
    _add_vocabulary(w, tokenizer_path, config.num_embed)
    say(f"converting the weights to {dtype}")
    _add_tensors(w, gguf, arch, config, params, dtype)
    say("writing the GGUF file")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "Modelfile"), "w", encoding="utf-8") as f:
        f.write(templates.modelfile(os.path.basename(path)))
    return path


def _add_hyperparameters(w, gguf, config, family: str, dtype: str) -> None:
    """The architecture's keys: sizes, attention pattern, rope, soft caps and the file type."""
    kw = hf_names.config_kwargs(config, family)
    w.add_name("gemma-ft export")
    w.add_context_length(kw["max_position_embeddings"])
    w.add_embedding_length(config.embed_dim)
    w.add_block_count(config.num_layers)
    w.add_feed_forward_length(config.hidden_dim)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(kw["sliding_window"])
    w.add_sliding_window_pattern([k == "sliding_attention" for k in kw["layer_types"]])
    w.add_rope_freq_base(float(config.global_base_frequency))
    w.add_rope_freq_base_swa(float(config.local_base_frequency))
    if config.global_scale_factor != 1.0:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(config.global_scale_factor))
    if kw["final_logit_softcapping"] is not None:
        w.add_final_logit_softcapping(float(kw["final_logit_softcapping"]))
    if kw["attn_logit_softcapping"] is not None:
        w.add_attn_logit_softcapping(float(kw["attn_logit_softcapping"]))
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "f32": gguf.LlamaFileType.ALL_F32, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocabulary(w, tokenizer_path: str, num_embed: int) -> None:
    """The SentencePiece vocabulary, Gemma's special token ids and its chat template."""
    tokens, scores, types = sentencepiece_vocab(tokenizer_path, num_embed)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_eot_token_id(106)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(templates.JINJA)


def _add_tensors(w, gguf, arch: str, config, params, dtype: str) -> None:
    """Every weight under its llama.cpp name; norms as 1 + scale, in f32."""
    names = gguf.TensorNameMap(getattr(gguf.MODEL_ARCH, arch.upper()), config.num_layers)
    for hf_name, arr in hf_names.hf_tensors(params, config):
        name = names.get_name("model." + hf_name, try_suffixes=(".weight",))
        if name is None:
            raise hf_names.UnsupportedModel(f"gguf has no name for {hf_name}")
        data = np.asarray(arr, dtype=np.float32)
        if hf_name.endswith("norm.weight"):
            w.add_tensor(name, data + 1.0)  # 1-D: always f32
            continue
        _add_matrix(w, gguf, name, data, dtype)


def _add_matrix(w, gguf, name: str, data: np.ndarray, dtype: str) -> None:
    Q = gguf.GGMLQuantizationType
    if dtype == "f32":
        w.add_tensor(name, np.ascontiguousarray(data))
    elif dtype == "f16":
        w.add_tensor(name, np.ascontiguousarray(data.astype(np.float16)))
    else:
        qtype = Q.BF16 if dtype == "bf16" else Q.Q8_0
        packed = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
        w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
