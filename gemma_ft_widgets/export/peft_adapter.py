"""Write a run's LoRA adapters as a PEFT adapter: adapter_model.safetensors + adapter_config.json,
for `peft.PeftModel.from_pretrained(<the base in transformers>, DIR)`.

gemma adapts whole einsums: for `inputs,W->outputs` it learns A (the reduced input axes, r)
and B (r, the output axes), and adds A·B to W (gemma.peft._einsum_utils). Each fused einsum
is one or more `nn.Linear` in transformers (hf_names). The delta is written exactly when it
factors per Linear: A's axes are that Linear's input axes and B's are a split axis (k|v,
q|k|v, gate|up) plus that Linear's output axes; then lora_A = A as (r, in) and lora_B = the
split's slice of B as (out, r), shared A included, with lora_alpha = r (scale 1, as gemma).
Anything else (an axis on both sides, another layout) is refused with the reason; nothing is
approximated.
"""

from __future__ import annotations

import os

import numpy as np

from . import hf, hf_names

# gemma einsum -> (transformers block, the Linear layers it is fused from, in order)
MODULES = {
    "q_einsum": ("self_attn", ("q_proj",)),
    "kv_einsum": ("self_attn", ("k_proj", "v_proj")),
    "qkv_einsum": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "attn_vec_einsum": ("self_attn", ("o_proj",)),
    "gating_einsum": ("mlp", ("gate_proj", "up_proj")),
    "linear": ("mlp", ("down_proj",)),
}


class NotExpressible(hf_names.UnsupportedModel):
    """This LoRA cannot be written exactly as PEFT LoRA modules."""


def _module_name(path: tuple, weight_name: str) -> str:
    return weight_name if weight_name != "w" else str(path[-2])


def factors(eqn: str, weight_shape, a: np.ndarray, b: np.ndarray, outputs: int):
    """[(lora_A (r, in), lora_B (out, r))] per transformers Linear, or NotExpressible."""
    from gemma.peft import _einsum_utils

    r = a.shape[-1]
    lora_eqn, a_shape, b_shape = _einsum_utils.get_lora_einsum_str_and_shapes(
        einsum_str=eqn, weights_shape=weight_shape, rank=r)
    inputs, a_str, b_str = lora_eqn.split("->")[0].split(",")
    out_str = lora_eqn.split("->")[1]
    weights = eqn.replace(" ", "").split("->")[0].split(",")[1]
    rank = a_str[-1]
    shared = set(a_str[:-1]) & set(out_str)
    if shared:
        raise NotExpressible(f"LoRA on einsum {eqn!r}: axis {''.join(sorted(shared))} is in both factors, "
                             "so the update is not one low-rank matrix per Linear")
    if b_str[0] != rank or a_str[-1] != rank or set(a_str[:-1]) - set(inputs):
        raise NotExpressible(f"LoRA on einsum {eqn!r} has layout {a_str},{b_str}; PEFT needs (in, r),(r, out)")
    lora_a = a.reshape(-1, r).T  # (r, in): in axes in weight order, as hf_names flattens them
    out_axes = b_str[1:]
    if outputs == 1:
        return [(lora_a, b.reshape(r, -1).T)]
    split = next((c for c in weights if c in out_axes), None)
    if split != out_axes[0] or b.shape[1] != outputs:
        raise NotExpressible(f"LoRA on einsum {eqn!r}: cannot split {b_str} into {outputs} Linear layers")
    return [(lora_a, b[:, i].reshape(r, -1).T) for i in range(outputs)]


def adapter_tensors(lora_model, base_params, adapters) -> tuple[dict, set, int]:
    """({peft key: float32 array}, target module names, rank)."""
    from ..train import lora

    einsums = lora.adapter_einsums(lora_model, lora.merge(base_params, adapters))
    tensors, targets, rank = {}, set(), None

    def get(tree, path):
        for k in path:
            tree = tree[k]
        return tree

    for path, (eqn, weight_name) in einsums.items():
        gemma_name = _module_name(path, weight_name)
        if gemma_name not in MODULES or not str(path[0]).startswith("layer_"):
            raise NotExpressible(f"LoRA on {'/'.join(map(str, path))} ({gemma_name}) has no transformers module")
        block, linears = MODULES[gemma_name]
        weight = get(base_params, path[:-1])[weight_name]
        ad = get(adapters, path)["lora"]
        a, b = np.asarray(ad["a"], np.float32), np.asarray(ad["b"], np.float32)
        rank = a.shape[-1]
        layer = str(path[0]).split("_")[1]
        for linear, (la, lb) in zip(linears, factors(eqn, weight.shape, a, b, len(linears))):
            key = f"base_model.model.model.layers.{layer}.{block}.{linear}"
            tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(la)
            tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(lb)
            targets.add(linear)
    return tensors, targets, rank


def write(out_dir: str, src, dtype: str = "float32", say=lambda msg: None) -> str:
    """Write the run's adapters to `out_dir` as a PEFT adapter in `dtype` (see the module
    docstring); returns `out_dir`. ValueError for an unknown dtype."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    if dtype not in hf.TORCH_DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(hf.TORCH_DTYPES)}")
    hf_names.architecture(src.family)  # refuses what transformers has no class for
    say("factoring the adapters into PEFT modules")
    arrays, targets, rank = adapter_tensors(src.lora_model, src.params, src.adapters)
    target = getattr(torch, dtype)
    save_file({k: torch.from_numpy(v).to(target).contiguous() for k, v in arrays.items()},
              os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
               target_modules=sorted(targets), base_model_name_or_path=None).save_pretrained(out_dir)
    return out_dir
