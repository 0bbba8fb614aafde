"""What an export reads from a run: its network config, weights and tokenizer (trainer side)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .. import contract


@dataclasses.dataclass
class Source:
    """A run's checkpoint as an export reads it: network config, params, tokenizer, and for a PEFT
    export the adapters."""

    run_dir: str
    checkpoint: str
    family: str  # tiny | gemma2 | gemma3 | gemma4
    architecture: str  # the model table's name
    config: Any  # gm.nn TransformerConfig
    params: Any  # merged (full model) params, or the base params for an adapter export
    tokenizer_path: str
    run_config: Any
    adapters: Any = None  # LoRA params (peft export only)
    lora_model: Any = None


def load_merged(run_dir: str, ckpt: str) -> Source:
    """The checkpoint's full weights, LoRA folded in (train.sample.load_params, as the sampler)."""
    from ..train import sample

    loaded, path = sample.load_params(run_dir, ckpt)
    return Source(run_dir, path, loaded.spec.family, loaded.spec.name, loaded.model.config,
                  loaded.params, loaded.tokenizer_path, sample.run_config(run_dir))


def load_adapters(run_dir: str, ckpt: str) -> Source:
    """The base weights and, separately, the checkpoint's LoRA adapters."""
    import jax

    from ..train import checkpoints, lora, models, sample
    from . import ExportError

    config = sample.run_config(run_dir)
    if config.method != "lora":
        raise ExportError(f"run {os.path.basename(run_dir)} trained all weights (method {config.method!r}); "
                          "a PEFT adapter needs a LoRA run: export it with --format hf instead")
    loaded = models.load_model(config.model, seed=config.seed, dtype_name=config.dtype)
    lora_model = lora.wrap(loaded.model, config.lora_rank, dtype=loaded.dtype)
    like = jax.eval_shape(lambda: lora.init_lora_params(lora_model, config.seed))
    # As the run used them: B scaled by lora_alpha / lora_rank (the PEFT file then says alpha = r).
    adapters = lora.scaled(checkpoints.restore_params(ckpt, like), lora.scale(config.lora_alpha, config.lora_rank))
    return Source(run_dir, ckpt, loaded.spec.family, loaded.spec.name, loaded.model.config, loaded.params,
                  loaded.tokenizer_path, config, adapters, lora_model)


def write_info(out_dir: str, src: Source, fmt: str, dtype: str) -> None:
    """gemma_ft_export.json: where the weights came from, for people and tools."""
    cfg = src.run_config
    contract.atomic_write_json(os.path.join(out_dir, "gemma_ft_export.json"), {
        "format": fmt, "dtype": dtype, "architecture": src.architecture, "family": src.family,
        "base_model": cfg.model, "method": cfg.method,
        "lora_rank": cfg.lora_rank if cfg.method == "lora" else None,
        "lora_merged": cfg.method == "lora" and fmt != "peft",
        "source_run": src.run_dir, "source_checkpoint": src.checkpoint, "exported_at": contract.utc_now(),
    })
