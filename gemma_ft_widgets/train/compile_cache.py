"""JAX's persistent compilation cache, one per workspace (contract.COMPILE_CACHE_DIR).

A run compiles its train step, eval step and sampler once per shape; every later process with
the same shapes (a resume, a re-run, the playground's sampler, `gemma-ft sample`) reads the
compiled programs from disk instead. JAX keys each entry by the program, the devices and the
jax/XLA versions, so an entry is never used where it does not fit, and it evicts the least
recently used entries past MAX_BYTES. The workspace is the user's own folder: JAX's guide asks
that nobody else may write to a cache, since its entries are run as code.

On with GEMMA_FT_COMPILE_CACHE=1 (off by default for now: with it, the first checkpoint's save
took longer, and a run folder moved or deleted while the next save was in flight was re-created
by orbax under the old name, which tests/test_reliability_folder_gone.py caught; see
docs/lifecycle.md). A cache the user set for JAX (JAX_COMPILATION_CACHE_DIR) is kept either way.
Multi-process runs do not use it: their programs hold the collectives of one process group, and
a cache shared between their processes was not tried here.
"""

from __future__ import annotations

import importlib.util
import os

from .. import contract

MAX_BYTES = 4 << 30  # a 4B model's train step is some hundreds of MB; a few shapes fit


def enable(run_dir: str, processes: int = 1) -> str | None:
    """Point JAX's compilation cache at the workspace of `run_dir` (before the first compile);
    the folder in use, or None when off (not asked for, several processes, or a read-only workspace)."""
    import jax

    if os.environ.get(contract.COMPILE_CACHE_ENV, "0") != "1" or processes > 1:
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir  # the user's own
    path = os.path.join(os.path.dirname(os.path.abspath(run_dir)), contract.COMPILE_CACHE_DIR)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # a read-only or full workspace: compile as before
    jax.config.update("jax_compilation_cache_dir", path)
    if importlib.util.find_spec("filelock") is not None:  # JAX's eviction needs it
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
