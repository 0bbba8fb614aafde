"""JAX's persistent compilation cache, one per workspace (train/compile_cache.py), asked for with
GEMMA_FT_COMPILE_CACHE=1: a second trainer process with the same shapes compiles nothing anew;
without it, no cache is written."""

from __future__ import annotations

import os
import subprocess
import sys

from gemma_ft_widgets import contract

from .test_train_loop import ROOT, events, make_run


def train_process(run_dir: str, **env: str) -> None:
    # Every compile is cached here, however fast: on a fast machine tiny's steps compile in
    # under JAX's default threshold of 1 s, and the test would see no entry at all.
    # A cache of the user's own (JAX_COMPILATION_CACHE_DIR) would be used instead: not here.
    env = {**{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", contract.COMPILE_CACHE_ENV: "1", **env}
    done = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.train", run_dir], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert events(run_dir, "final")[-1]["state"] == "FINISHED"


def cache_entries(workspace) -> set[str]:
    folder = os.path.join(str(workspace), contract.COMPILE_CACHE_DIR)
    return {n for n in os.listdir(folder) if not n.endswith("-atime")}  # LRU bookkeeping aside


def test_a_second_run_with_the_same_shapes_compiles_from_the_workspace_cache(tmp_path):
    first = make_run(tmp_path, "first", max_steps=3, eval_every=2, sample_tokens=8)
    train_process(first)
    written = cache_entries(tmp_path)
    assert written, "the first run cached its compiled programs"
    second = make_run(tmp_path, "second", max_steps=3, eval_every=2, sample_tokens=8)
    train_process(second)
    assert cache_entries(tmp_path) == written  # every program of the second run came from the cache
    assert events(second, "sample"), "the samples' sampler ran from the cache too"


def test_the_cache_is_off_unless_asked_for(tmp_path):
    for value in ("0", ""):
        run = make_run(tmp_path, f"off{value}", max_steps=2)
        train_process(run, **{contract.COMPILE_CACHE_ENV: value})
    assert not os.path.exists(os.path.join(str(tmp_path), contract.COMPILE_CACHE_DIR))
