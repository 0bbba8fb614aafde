"""This CPU's matmul speed, measured once and cached per machine: the estimate's CPU step
time comes from it instead of a constant.

`cpu_flops()` times a float32 matmul with numpy (the same BLAS-class kernels XLA's CPU backend
calls) for at most MEASURE_S, keeps the best of the repeats, and multiplies by
TRAIN_EFFICIENCY: the share of that rate a training step reaches (its matmuls are small, and
it spends time in attention's softmax, norms and the optimizer). TRAIN_EFFICIENCY was found
by running tiny LoRA 8 x 128 with the real trainer beside the measurement on the same
machine (docs/estimate.md). The result is cached in CACHE_PATH keyed by the CPU's model name,
core count and numpy's version; never measured at import, only when an estimate for a CPU is
asked for (`measured_cpu_flops()` reads the cache without measuring).
"""

from __future__ import annotations

import json
import os
import time

MEASURE_S = 0.3  # the measurement's budget
SHAPE = (512, 512, 512)  # (m, k, n): 0.27 GFLOP a repeat, small enough to repeat several times
TRAIN_EFFICIENCY = 0.25  # see the docstring and docs/estimate.md
CACHE_PATH = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                          "gemma_ft_widgets", "cpu_flops.json")

_memo: dict[str, float] = {}


def machine_key() -> str:
    """The cache key of this machine's measurement: CPU model, core count and numpy's version."""
    from importlib import metadata

    from .accelerator import _cpu

    cpu = _cpu()
    try:
        numpy = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        numpy = "?"
    return f"{cpu.name}|{cpu.count} cores|numpy {numpy}"


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def matmul_flops(budget_s: float = MEASURE_S) -> float:
    """The best float32 matmul rate numpy reaches here within `budget_s` (FLOP/s)."""
    import numpy as np

    m, k, n = SHAPE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    best, end = float("inf"), time.perf_counter() + budget_s
    while True:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() >= end:
            break
    return 2 * m * k * n / max(best, 1e-9)


def measured_cpu_flops(path: str | None = None) -> float | None:
    """The cached sustained training FLOP/s of this machine; None before its first measurement."""
    path = path or CACHE_PATH
    key = machine_key()
    if key in _memo:
        return _memo[key]
    value = _read_cache(path).get(key)
    if isinstance(value, (int, float)) and value > 0:
        _memo[key] = float(value)
        return float(value)
    return None


def cpu_flops(path: str | None = None, refresh: bool = False) -> float:
    """This machine's sustained training FLOP/s: cached, or measured now (< 1 s) and cached."""
    path = path or CACHE_PATH
    if not refresh:
        cached = measured_cpu_flops(path)
        if cached is not None:
            return cached
    key = machine_key()
    value = matmul_flops() * TRAIN_EFFICIENCY
    _memo[key] = value
    try:  # best effort: a read-only home only loses the cache
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = _read_cache(path)
        data[key] = value
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass
    return value
