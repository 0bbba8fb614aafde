"""The trainer process: the only layer that imports jax, flax, optax and gemma.

    python -m gemma_ft_widgets.train RUN_DIR                 # train (docs/ARCHITECTURE.md)
    python -m gemma_ft_widgets.train.sample RUN_DIR ...      # sample from a checkpoint
    python -m gemma_ft_widgets.train.export RUN_DIR --out D  # LoRA merged into the base

Modules: data (tokenise, batches), models (tiny / kagglehub / local weights), lora, optim,
step (loss, jitted steps), sharding (mesh, FSDP), plan (all of these built from a config),
checkpoints (orbax), loop (the run: a loop over the plan), step_log (step events), tb
(TensorBoard), sample (`sample.sample(run_dir, prompt, ...)`), export
(`export.export(run_dir, out_dir)`), simulated (a trainer without jax, for tests and demos).
Importing this package imports none of them.
"""

from __future__ import annotations

import os as _os

# kauldron imports TensorFlow (CPU build) for typing only; no TF op runs here. Keep its C++
# start-up banners ("oneDNN custom operations are on") out of the trainer's stderr, which the
# panel shows when a run fails.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv: list[str] | None = None) -> int:
    """`python -m gemma_ft_widgets.train RUN_DIR`: see loop.main (imported only when called)."""
    from .loop import main as _main

    return _main(argv)
