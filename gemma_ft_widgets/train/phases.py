"""The trainer's side of STARTING progress: `phase` events (runs/phases.py describes them).

* `Reporter`: one event as each phase begins; progress events at most every `every` seconds
  (and always the last one), so a tokenizer loop or a download never floods metrics.jsonl.
* `download_progress(report)`: kagglehub draws a tqdm bar per file it downloads
  (kagglehub.clients._download_file); while the context is open those bars are counted and
  `report(bytes, total)` is told their sums. kagglehub has no progress callback of its own.
* The last compile time per shape key, kept in the workspace (contract.COMPILE_TIMES_NAME),
  is the guide shown while the next run with the same shapes compiles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable

from .. import contract


class Reporter:
    """Writes the `phase` events of STARTING, throttled (see the module docstring)."""

    def __init__(self, event: Callable[..., dict], every: float = 0.5):
        self._event, self.every = event, every
        self._last = -1e9
        self._lock = threading.Lock()  # download bars update from kagglehub's threads

    def begin(self, phase: str, **fields) -> None:
        """The event that phase `phase` begins (always written)."""
        with self._lock:
            self._last = time.monotonic()
            self._event(contract.EVENT_PHASE, phase=phase, **fields)

    def progress(self, phase: str, done: int, total: int | None, done_key: str, **fields) -> None:
        """A progress event, unless one was written less than `every` seconds ago (the
        last one, done == total, is always written)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every and done != total:
                return
            self._last = now
            self._event(contract.EVENT_PHASE, phase=phase, **{done_key: done, "total": total}, **fields)


@contextlib.contextmanager
def download_progress(report: Callable[[int, int], None]):
    """Count kagglehub's download bars while open (see the module docstring)."""
    try:
        from kagglehub import clients
    except Exception:  # noqa: BLE001 - no kagglehub: nothing is downloaded through it
        yield
        return
    base = clients.tqdm
    bars: list = []
    lock = threading.Lock()

    class CountingBar(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with lock:
                bars.append(self)
            self._tell()

        def update(self, n=1):
            out = super().update(n)
            self._tell()
            return out

        def _tell(self):
            with lock:
                done, total = sum(int(b.n) for b in bars), sum(int(b.total or 0) for b in bars)
            report(done, total)

    clients.tqdm = CountingBar
    try:
        yield
    finally:
        clients.tqdm = base


def compile_key(config, devices) -> str:
    """What decides the compiled train step's shapes and code."""
    import jax

    cfg = config.to_dict()
    keys = ("model", "method", "lora_rank", "quantization", "batch_size", "max_seq_len", "dtype", "remat",
            "fsdp", "num_processes")
    d = devices[0]
    parts = {k: cfg.get(k) for k in keys} | {"device": f"{len(devices)}x{d.platform}:{d.device_kind}",
                                              "jax": jax.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _times_path(run_dir: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(run_dir)), contract.COMPILE_TIMES_NAME)


def last_compile_seconds(run_dir: str, key: str) -> float | None:
    """How long the last compile of the shape key `key` took in this workspace, or None."""
    try:
        value = contract.read_json(_times_path(run_dir)).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def remember_compile(run_dir: str, key: str, seconds: float) -> None:
    """Best effort: a workspace that cannot be written only loses the guide."""
    path = _times_path(run_dir)
    try:
        try:
            times = contract.read_json(path)
            times = times if isinstance(times, dict) else {}
        except (OSError, ValueError):
            times = {}
        times[key] = round(seconds, 2)
        contract.atomic_write_json(path, times)
    except OSError:
        pass


def compile_with_guide(trainer) -> float:
    """trainer.compile(), announced with the last compile time of the same shapes, which it
    then replaces (process 0 writes it)."""
    key = compile_key(trainer.config, trainer.devices)
    trainer.phases.begin("compile", last_seconds=last_compile_seconds(trainer.run_dir, key))
    seconds = trainer.compile()
    if trainer.chief:
        remember_compile(trainer.run_dir, key, seconds)
    return seconds


def load_model_reporting(reporter: Reporter, load):
    """`load()` (models.load_model) announced as the model phase, with kagglehub's download
    progress reported while it runs."""
    reporter.begin("model")

    def on_download(done: int, total: int) -> None:
        reporter.progress("download", done, total, "bytes")
        if total and done >= total:  # downloaded: the weights load next
            reporter.begin("model")

    with download_progress(on_download):
        return load()
