"""How long a run takes to start (launch, load, compile, first step) and to save its first
checkpoint, as measured by the workspace's own runs; a documented guess when none matches.

Measured from each run's first attempt: status.log's first STARTING line (the launch), the
trainer's `compile` event (its `seconds`, and its time: load ends where compile begins), its
first `step` event, and its first `checkpoint` event's `seconds` (the save's duration).
A run of the same model, method and shapes on this workspace counts first ("same shapes"),
then any run of the same model and method ("same model"), the newest first. Stdlib only; each
run folder is read once per version of its metrics file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from typing import Any

from . import contract

# What decides the compiled step (train/phases.py compile_key, without the device and jax).
SHAPE_KEYS = ("model", "method", "lora_rank", "quantization", "batch_size", "max_seq_len", "dtype", "remat",
              "fsdp", "num_processes")
MAX_RUNS = 200  # newest run folders read
# The guess without a measurement: the trainer process with jax imported and its devices up,
# reading the weights at LOAD_BYTES_PER_S (a local disk or kagglehub's cache), compiling at
# COMPILE_S_PER_LAYER. Tiny measured 12-16 s here (docs/estimate.md), the guess says 12 s.
BASE_S = 10.0
LOAD_BYTES_PER_S = 200e6
COMPILE_S_PER_LAYER = 1.0


@dataclasses.dataclass(frozen=True)
class Startup:
    """A start-up time to expect (launch to first step) and where it comes from: a run here, or a guess."""

    seconds: float  # launch to first step
    load_s: float | None  # launch to the start of compilation
    compile_s: float | None
    checkpoint_s: float | None  # the first checkpoint's save
    source: str  # "same shapes: RUN", "same model: RUN", or "a guess: ..."

    @property
    def measured(self) -> bool:
        """Whether it comes from a run here rather than a guess."""
        return not self.source.startswith("a guess")

    def summary(self) -> str:
        """One line, e.g. "≈ 40 s start-up (load 10 s, compile 30 s) [same model: RUN]"."""
        parts = [f"load {self.load_s:.0f} s" if self.load_s is not None else "",
                 f"compile {self.compile_s:.0f} s" if self.compile_s is not None else ""]
        inner = ", ".join(p for p in parts if p)
        text = f"≈ {self.seconds:.0f} s start-up" + (f" ({inner})" if inner else "")
        if self.checkpoint_s is not None:
            text += f", {self.checkpoint_s:.1f} s per checkpoint"
        return text + f" [{self.source}]"


_cache: dict[str, tuple[float, dict | None]] = {}


def _parse_time(text: str) -> float | None:
    try:
        return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC).timestamp()
    except ValueError:
        return None


def _launch_time(run_dir: str) -> float | None:
    try:
        with open(os.path.join(run_dir, contract.STATUS_LOG_NAME), encoding="utf-8") as f:
            for line in f:
                stamp, _, rest = line.partition(" ")
                if rest.startswith("STARTING"):
                    return _parse_time(stamp)
    except OSError:
        pass
    return None


HEAD_BYTES = 4 << 20  # how much of a run's metrics.jsonl start-up facts are looked for in


def run_facts(run_dir: str) -> dict | None:
    """{config, seconds, load_s, compile_s, checkpoint_s} of a run's first attempt; None when
    it never reached a step."""
    metrics = os.path.join(run_dir, contract.METRICS_NAME)
    try:
        mtime = os.stat(metrics).st_mtime
    except OSError:
        return None
    hit = _cache.get(run_dir)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    facts = _read(run_dir, metrics)
    _cache[run_dir] = (mtime, facts)
    return facts


def _read(run_dir: str, metrics: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, contract.CONFIG_NAME), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    start = compile_ev = first_step = ckpt_s = None
    try:
        with open(metrics, encoding="utf-8") as f:
            read = 0
            for line in f:  # only as far as the first checkpoint (or the second attempt)
                read += len(line)
                if read > HEAD_BYTES:
                    break  # a long history whose checkpoints carry no time: its head is enough
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kind = ev.get("event")
                if kind == "start":
                    if start is not None:
                        break  # a resume: the first attempt's facts are complete
                    start = ev.get("time")
                elif kind == "compile" and compile_ev is None:
                    compile_ev = ev
                elif kind == "step" and first_step is None:
                    first_step = ev.get("time")
                elif kind == "checkpoint" and isinstance(ev.get("seconds"), (int, float)):
                    ckpt_s = float(ev["seconds"])
                    break
    except OSError:
        return None
    if not isinstance(first_step, (int, float)) or not isinstance(start, (int, float)):
        return None
    launch = _launch_time(run_dir)
    t0 = launch if launch is not None and launch <= start else start
    compile_s = compile_ev.get("seconds") if compile_ev else None
    load_s = None
    if isinstance(compile_s, (int, float)) and isinstance(compile_ev.get("time"), (int, float)):
        load_s = max(0.0, compile_ev["time"] - compile_s - t0)
    return {"config": config, "seconds": max(0.0, first_step - t0), "load_s": load_s,
            "compile_s": float(compile_s) if isinstance(compile_s, (int, float)) else None, "checkpoint_s": ckpt_s}


def _runs(workspace: str) -> list[str]:
    try:
        entries = [e for e in os.scandir(workspace) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    return [e.path for e in entries[:MAX_RUNS]]


def _get(config: Any) -> dict:
    from .config import TrainingConfig

    return {**TrainingConfig().to_dict(), **(config if isinstance(config, dict) else config.to_dict())}


def guess(config: Any) -> Startup:
    """The start-up guessed from the model's size and depth, for a model never run here."""
    from .estimate import estimate, spec_for

    values = _get(config)
    try:
        spec = spec_for(values["model"])
        weights = estimate(values).weights_bytes
    except (ValueError, OSError):
        return Startup(BASE_S, None, None, None, "a guess: unknown architecture")
    load = BASE_S + weights / LOAD_BYTES_PER_S
    comp = COMPILE_S_PER_LAYER * spec.num_layers
    return Startup(load + comp, load, comp, None, "a guess: no run of this model here yet")


def startup(config: Any, workspace: str | None) -> Startup:
    """The measured start-up of the closest earlier run in `workspace`, else `guess`."""
    values = _get(config)
    same_model = None
    for run_dir in _runs(workspace) if workspace else []:
        facts = run_facts(run_dir)
        if facts is None:
            continue
        theirs = _get(facts["config"]) if isinstance(facts["config"], dict) else None
        if theirs is None or (theirs.get("model"), theirs.get("method")) != (values["model"], values["method"]):
            continue
        name = os.path.basename(run_dir)
        if all(theirs.get(k) == values.get(k) for k in SHAPE_KEYS):
            return Startup(facts["seconds"], facts["load_s"], facts["compile_s"], facts["checkpoint_s"],
                           f"measured: same shapes, {name}")
        if same_model is None:
            same_model = Startup(facts["seconds"], facts["load_s"], facts["compile_s"], facts["checkpoint_s"],
                                 f"measured: same model, other shapes, {name}")
    return same_model or guess(config)
