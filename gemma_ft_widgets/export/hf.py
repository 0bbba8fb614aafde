"""Write a Hugging Face model folder: `AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` load it with nothing else.

    config.json, generation_config.json      Gemma3ForCausalLM (gemma3_text; also the tiny
                                             model) or Gemma2ForCausalLM
    model.safetensors                        or model-0000N-of-0000M.safetensors + index
                                             past 5 GB (huggingface_hub's sharding)
    tokenizer.json, tokenizer_config.json    converted from the run's tokenizer.model, with
    tokenizer.model                          the special tokens and the chat template the
                                             run trained with (templates.JINJA)
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from . import hf_names, templates

MAX_SHARD = "5GB"
TORCH_DTYPES = ("float32", "bfloat16", "float16")


def hf_config(config, family: str, dtype: str = "bfloat16"):
    """The transformers config object for a gemma TransformerConfig."""
    import transformers

    arch = hf_names.architecture(family)
    cls = transformers.Gemma3TextConfig if arch == "Gemma3ForCausalLM" else transformers.Gemma2Config
    cfg = cls(**hf_names.config_kwargs(config, family))
    cfg.architectures = [arch]
    cfg.dtype = dtype
    return cfg


def state_dict(config, params, dtype: str = "bfloat16") -> dict:
    """{'model.<name>': torch tensor} in `dtype` (bf16 arrays pass through f32: exact)."""
    import torch

    target = getattr(torch, dtype)
    out = {}
    for name, arr in hf_names.hf_tensors(params, config):
        t = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable copy
        out["model." + name] = t.to(target).contiguous()
    return out


def write_tokenizer(out_dir: str, tokenizer_path: str) -> None:
    """tokenizer.json (converted from the sentencepiece model by transformers, which does that
    when it finds tokenizer.model), the turn markers as special tokens, the chat template."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    shutil.copyfile(tokenizer_path, os.path.join(out_dir, "tokenizer.model"))
    tok = GemmaTokenizer.from_pretrained(out_dir, add_bos_token=True, add_eos_token=False)
    before = len(tok)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in (templates.START, templates.END)],
                   special_tokens=True)
    if len(tok) != before:
        raise ValueError(f"the tokenizer {tokenizer_path} has no {templates.START} / {templates.END} pieces")
    tok.chat_template = templates.JINJA
    tok.save_pretrained(out_dir)


def write(out_dir: str, config, params, tokenizer_path: str, family: str, dtype: str = "bfloat16",
          say=lambda msg: None, max_shard_size: str = MAX_SHARD) -> str:
    """Write the folder `out_dir` (which must exist and be empty)."""
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(TORCH_DTYPES)}")
    cfg = hf_config(config, family, dtype)
    cfg.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=2, eos_token_id=[1, 106], pad_token_id=0).save_pretrained(out_dir)
    say(f"converting the weights to {dtype}")
    tensors = state_dict(config, params, dtype)
    say("writing safetensors")
    save_torch_state_dict(tensors, out_dir, max_shard_size=max_shard_size, metadata={"format": "pt"})
    say("writing the tokenizer and chat template")
    write_tokenizer(out_dir, tokenizer_path)
    return out_dir
