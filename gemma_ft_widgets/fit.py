"""Does a run fit a machine, and what is the cheapest change that makes it fit? No jax.

    from gemma_ft_widgets import fit
    v = fit.verdict(config, fit.TARGETS["t4"])     # Verdict(fits=False, text="does not fit T4 16 GB: ...")
    f = fit.make_it_fit(config, fit.TARGETS["t4"])  # Fix(values={...}, changes=[("quantization", "none", "int4"), ...])

A target is a device kind, a device count and each device's memory. "This machine" comes from
accelerator.detect() (nvidia-smi, /dev/accel*, TPU environment variables, else the CPU and its
RAM, a container's limit included). The verdict is estimate.py's per-device total against 90%
of a device's memory (Estimate.fits), with the batch split over the devices (data parallel).

make_it_fit tries, cheapest first, and keeps the first that fits (each rung keeps the ones
before it): quantization int8, then int4 (LoRA, not Gemma 4); remat "block" (with no, int8,
int4 quantization); then halving the micro-batch down to num_processes, first while doubling
grad_accum_steps (the same effective batch, more passes per step), else without; then halving the sequence
length down to MIN_SEQ_LEN. On a target of several devices each of these is tried first
without, then with fsdp (sharding the weights costs communication, not quality). Quantization
comes before remat because it costs little quality and no time; remat costs ~30% more
compute; a smaller batch or a shorter sequence changes what is trained.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import MAX_GRAD_ACCUM
from .estimate import estimate, format_bytes, machine_memory

GIB = 2**30
MIB = 2**20
MIN_SEQ_LEN = 64
FIELDS = ("fsdp", "quantization", "remat", "batch_size", "grad_accum_steps", "max_seq_len")  # what make_it_fit may change
HEADROOM = 0.9  # Estimate.fits' default: 10% spare for the runtime, fragmentation, the kernel


@dataclasses.dataclass(frozen=True)
class Target:
    """A machine to judge a run against: its device kind, device count and memory per device."""

    key: str
    label: str
    kind: str  # "gpu", "tpu" or "cpu" (the estimate's device kinds)
    count: int  # devices the batch is split over
    memory_bytes: int | None  # per device (host RAM for "cpu"); None: unknown

    def describe(self) -> str:
        """Its label, saying so when its memory is unknown."""
        if self.memory_bytes is None:
            return f"{self.label} (memory unknown)"
        return self.label


# Memory as the device reports it (nvidia-smi's MiB; a TPU v3-8 is 8 cores of 16 GiB, v5e one
# 16 GiB chip per device), so a detected T4 and the "T4" target give the same verdict.
_CATALOGUE = [
    Target("t4", "T4 16 GB (Colab, Kaggle)", "gpu", 1, 15360 * MIB),
    Target("l4", "L4 24 GB", "gpu", 1, 23034 * MIB),
    Target("a100-40", "A100 40 GB", "gpu", 1, 40960 * MIB),
    Target("a100-80", "A100 80 GB", "gpu", 1, 81920 * MIB),
    Target("h100", "H100 80 GB", "gpu", 1, 81559 * MIB),
    Target("h200", "H200 141 GB", "gpu", 1, 143771 * MIB),
    Target("tpu-v3-8", "TPU v3-8 (8 × 16 GB)", "tpu", 8, 16 * GIB),
    Target("tpu-v5e-1", "TPU v5e-1 (16 GB)", "tpu", 1, 16 * GIB),
    Target("tpu-v5e-8", "TPU v5e-8 (8 × 16 GB)", "tpu", 8, 16 * GIB),
]
TARGETS: dict[str, Target] = {t.key: t for t in _CATALOGUE}
THIS_MACHINE = "this"

# HBM per TPU device by generation, for a detected TPU (TPU_ACCELERATOR_TYPE like "v5litepod-8").
_TPU_MEMORY = {"v2": 8 * GIB, "v3": 16 * GIB, "v4": 32 * GIB, "v5lite": 16 * GIB, "v5e": 16 * GIB,
               "v5p": 95 * GIB, "v6e": 32 * GIB}


def this_machine(accel=None, ram_bytes: int | None = None) -> Target:
    """The kernel machine as a target: its GPUs, its TPU devices, else its CPU and RAM."""
    from . import accelerator

    accel = accel or accelerator.detect()
    if accel.kind == "gpu":
        mem = accel.memory_bytes
        label = f"this machine: {accel.count} × {accel.name}" + (f" ({mem / GIB:.0f} GiB)" if mem else "")
        return Target(THIS_MACHINE, label, "gpu", accel.count, mem)
    if accel.kind == "tpu":
        kind = accel.name.lower().replace("tpu", "").strip(" -")
        mem = next((m for gen, m in _TPU_MEMORY.items() if kind.startswith(gen)), None)
        return Target(THIS_MACHINE, f"this machine: {accel.count} × TPU {accel.name}", "tpu", accel.count, mem)
    if ram_bytes is None:
        ram_bytes = machine_memory()[0]  # the container's limit when lower than the RAM
    return Target(THIS_MACHINE, f"this machine: CPU, {ram_bytes / GIB:.0f} GiB RAM", "cpu", 1, ram_bytes)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a run fits a target (None: cannot tell), the bytes it needs and has, and a sentence."""

    fits: bool | None  # None: the target's memory or the model's shape is unknown
    need_bytes: int
    have_bytes: int | None
    target: Target
    text: str


def verdict(config: Any, target: Target) -> Verdict:
    """Whether `config` (TrainingConfig or dict) fits `target`, with a sentence saying so."""
    try:
        e = estimate(config, device=target.kind, num_devices=target.count)
    except (ValueError, OSError) as err:
        return Verdict(None, 0, target.memory_bytes, target, f"cannot tell whether it fits: {err}")
    need = e.total_bytes
    per = " per device" if target.count > 1 else ""
    if target.memory_bytes is None:
        return Verdict(None, need, None, target,
                       f"needs ≈ {format_bytes(need)}{per}; {target.label}: memory unknown")
    usable = int(target.memory_bytes * HEADROOM)
    have = format_bytes(target.memory_bytes)
    if e.fits(target.memory_bytes, HEADROOM):
        return Verdict(True, need, target.memory_bytes, target,
                       f"fits {target.label}: needs ≈ {format_bytes(need)}{per} of {have}")
    return Verdict(False, need, target.memory_bytes, target,
                   f"does not fit {target.label}: needs ≈ {format_bytes(need)}{per}, "
                   f"has {have} ({format_bytes(usable)} usable)")


@dataclasses.dataclass(frozen=True)
class Fix:
    """What make_it_fit changed to fit a target: the new config, the changes, and its verdict."""

    values: dict[str, Any]  # the whole config with the changes
    changes: list[tuple[str, Any, Any]]  # (field, old, new), in the order tried
    verdict: Verdict

    def describe(self) -> str:
        """The changes as "field old → new, ..." ("it already fits" for none)."""
        if not self.changes:
            return "it already fits"
        return ", ".join(f"{field} {old} → {new}" for field, old, new in self.changes)


def _get(config: Any) -> dict[str, Any]:
    from .config import TrainingConfig

    return {**TrainingConfig().to_dict(), **(config if isinstance(config, dict) else config.to_dict())}


def _valid(values: dict[str, Any]) -> bool:
    from .config import ConfigError, TrainingConfig

    try:
        TrainingConfig.from_dict(values, check_files=False)
    except ConfigError as e:  # a change the config refuses (e.g. quantizing Gemma 4) is skipped
        return not (set(FIELDS) & set(e.by_field()))
    return True


def _ladder(values: dict[str, Any], target: Target):
    """Candidate configs, cheapest change first (see the module's docstring)."""
    levels = ("none", "int8", "int4")
    quant = values.get("quantization", "none")
    quants = list(levels[levels.index(quant):]) if quant in levels and values.get("method", "lora") == "lora" \
        else [quant]
    remats = [values.get("remat", "none")] + (["block"] if values.get("remat", "none") != "block" else [])
    fsdps = [values.get("fsdp", False)] + ([True] if target.count > 1 and not values.get("fsdp") else [])
    for remat in remats:
        for q in quants:
            for fsdp in fsdps:
                yield {**values, "quantization": q, "remat": remat, "fsdp": fsdp}
    last = {**values, "quantization": quants[-1], "remat": "block", "fsdp": fsdps[-1]}
    floor = max(1, int(values.get("num_processes", 1) or 1))
    # Accumulating keeps the effective batch but holds a second copy of the gradients (full
    # fine-tuning: of every weight), so each rung is tried with it first, then without.
    kept, plain = dict(last), dict(last)
    while plain["batch_size"] // 2 >= floor and (plain["batch_size"] // 2) % floor == 0:
        accum = kept.get("grad_accum_steps", 1) * 2
        kept = {**kept, "batch_size": kept["batch_size"] // 2,
                "grad_accum_steps": accum if accum <= MAX_GRAD_ACCUM else kept.get("grad_accum_steps", 1)}
        plain = {**plain, "batch_size": plain["batch_size"] // 2}
        yield kept
        yield plain
    while plain["max_seq_len"] // 2 >= MIN_SEQ_LEN:
        kept = {**kept, "max_seq_len": kept["max_seq_len"] // 2}
        plain = {**plain, "max_seq_len": plain["max_seq_len"] // 2}
        yield kept
        yield plain


def make_it_fit(config: Any, target: Target) -> Fix | None:
    """The cheapest change that makes `config` fit `target`; None when nothing on the ladder
    fits (or the target's memory is unknown)."""
    values = _get(config)
    first = verdict(values, target)
    if first.fits is None:
        return None
    if first.fits:
        return Fix(values, [], first)
    for candidate in _ladder(values, target):
        if candidate == values or not _valid(candidate):
            continue
        v = verdict(candidate, target)
        if v.fits:
            changes = [(k, values.get(k), candidate[k]) for k in FIELDS
                       if candidate[k] != values.get(k)]
            return Fix(candidate, changes, v)
    return None


def start_anyway_note(config: Any, target: Target | None = None) -> str:
    """The status.log line of a run started although it does not fit this machine."""
    v = verdict(config, target or this_machine())
    return f"started anyway, on the user's word: {v.text}"

