"""Export a run as a standalone gemma checkpoint.

    python -m gemma_ft_widgets.train.export RUN_DIR --out DIR [--checkpoint step_N]
    export(run_dir, out_dir, checkpoint=None) -> out_dir

DIR becomes an orbax checkpoint of the full model params (NESTED layout, LoRA adapters folded
into the base weights: W + A·B) that `gm.ckpts.load_params(DIR)` reads, with the run's
tokenizer.model and gemma_ft_model.json (architecture, source) beside the arrays, so DIR also
works as the `model` of a new run. Written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .. import contract


class ExportError(Exception):
    """The run cannot be exported (output exists, no checkpoint, quantized base); the message says why."""

    pass


def export(run_dir: str, out_dir: str, checkpoint: str | None = None, overwrite: bool = False) -> str:
    """Write the run's checkpoint (newest by default) with LoRA merged as a gemma checkpoint in
    `out_dir`; returns it. ExportError when it cannot."""
    from gemma import gm

    from . import models, sample

    run_dir = os.path.abspath(run_dir)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and os.listdir(out_dir) if os.path.isdir(out_dir) else os.path.exists(out_dir):
        if not overwrite:
            raise ExportError(f"{out_dir} exists and is not empty; choose another --out or pass --overwrite")
    if sample.resolve_checkpoint(run_dir, checkpoint) is None:
        raise ExportError(f"{run_dir} has no checkpoint yet; train first")
    config = sample.run_config(run_dir)
    if config.quantization != "none":
        raise ExportError(f"{run_dir} trained LoRA on a {config.quantization} base; exporting a merged "
                          "checkpoint of a quantized run is not supported yet (sample it instead)")
    loaded, path = sample.load_params(run_dir, checkpoint)

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    gm.ckpts.save_params(loaded.params, tmp, wait_until_finished=True)
    shutil.copyfile(loaded.tokenizer_path, os.path.join(tmp, models.TOKENIZER_NAME))
    contract.atomic_write_json(os.path.join(tmp, models.MODEL_INFO_NAME), {
        "architecture": loaded.spec.name,
        "family": loaded.spec.family,
        "base_model": config.model,
        "method": config.method,
        "lora_rank": config.lora_rank if config.method == "lora" else None,
        "lora_merged": config.method == "lora",
        "source_run": run_dir,
        "source_checkpoint": path,
        "params": models.param_count(loaded.params),
        "exported_at": contract.utc_now(),
    })
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); prints the folder written, or the error (exit EXIT_CONFIG_ERROR)."""
    parser = argparse.ArgumentParser(prog="python -m gemma_ft_widgets.train.export",
                                     description="Write a run's weights (LoRA merged) as a gemma checkpoint.")
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="folder to create")
    parser.add_argument("--checkpoint", default=None, help="path, step_N or N; default: newest")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out, args.checkpoint, overwrite=args.overwrite)
    except (ExportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
