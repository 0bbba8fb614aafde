"""Accelerator memory and time per step of a training config, without jax.

    from gemma_ft_widgets.estimate import estimate
    e = estimate(config)            # a TrainingConfig or a dict with the same fields
    e.total_bytes, e.summary()      # "≈ 2.6 GB accelerator memory (weights 2.0 GB, ...); ≈ 0.9 s/step on GPU"

What is counted (the trainer in gemma_ft_widgets/train is the reference):

* weights: every parameter of the model in the training dtype (bf16 on an accelerator, f32 on
  a CPU or when the config says float32).
* LoRA: rank x (5·D + 2·N·H + 2·K·H + 3·F) params per layer (q, kv, attention output, gating,
  linear einsums), kept in f32. Exact for Gemma 2/3 and tiny.
* optimizer: Adam's two moments plus the gradients, for the trainable params only (f32 for
  LoRA adapters, the weights' dtype in full fine-tuning).
* activations: what the backward pass keeps per layer at batch x sequence, without
  rematerialisation (the gemma library has none): the residual stream and its norms, q/k/v and
  the attention output, the full L x L attention logits and probabilities per head (gemma
  uses plain einsum attention), the MLP's gate/up/product, plus one chunk of vocabulary logits
  (the trainer's chunked cross-entropy caps it at 256 MB).
* quantization (LoRA, int8/int4, train/quantize.py): the einsum weights (all but the tied
  embedding and the norms) at 8 or 4 bits; without remat the backward pass also keeps each
  layer's dequantized weights (the einsums' operands), so they count as activations.
* remat "block" (train/remat.py): the backward pass keeps one (batch, seq, width) input per
  layer and one layer's activations at a time, plus, when quantized, one layer's weights.
* time: 6·P·tokens FLOPs for full fine-tuning (4·P·tokens for LoRA: no weight gradients for
  the frozen base) plus attention's 12·layers·L·N·H per token, divided by an assumed sustained
  throughput per device kind (DEVICE_FLOPS), or on a CPU by this CPU's measured matmul rate
  (calibrate.py, cached per machine). A rough guide, not a benchmark.

Checked against XLA's memory plan of the real step on tiny (tests/test_estimate.py); numbers
for the named models are in docs/estimate.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from . import models

# Sustained FLOP/s assumed per device kind (peak x a typical utilisation for this workload).
DEVICE_FLOPS = {
    "gpu": 65e12 * 0.3,  # a Colab/Kaggle T4: 65 TFLOP/s fp16 tensor-core peak, ~30% sustained
    "tpu": 123e12 * 0.4,  # one TPU v3 chip's 123 TFLOP/s bf16 peak, ~40% sustained
    "cpu": 3e10,  # unused by estimate(): a CPU is measured (calibrate.py); kept for reference
}
DEVICE_NAMES = {"gpu": "GPU", "tpu": "TPU", "cpu": "CPU"}
CHUNK_LOGITS_BYTES = 256 * 2**20  # the trainer's cross-entropy chunk (train/step.py)
QUANT_BITS = {"int8": 8, "int4": 4}  # config.QUANTIZATIONS other than "none"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The memory per device and time per step of a config, part by part."""

    model: str
    method: str
    params: int
    trainable_params: int
    bytes_per_param: int
    weights_bytes: int
    lora_bytes: int
    gradients_bytes: int
    optimizer_bytes: int  # Adam moments + gradients of the trainable params
    activations_bytes: int
    total_bytes: int
    flops_per_step: float
    step_time_s: float
    device: str
    tokens_per_step: int

    def summary(self) -> str:
        """One line: the memory and its parts, and the time per step on the device."""
        dev = DEVICE_NAMES.get(self.device, self.device)
        parts = [f"weights {format_bytes(self.weights_bytes)}"]
        if self.method == "lora":
            parts.append(f"LoRA {format_bytes(self.lora_bytes)}")
        parts.append(f"Adam {format_bytes(self.optimizer_bytes)}")
        parts.append(f"activations {format_bytes(self.activations_bytes)}")
        return (f"≈ {format_bytes(self.total_bytes)} accelerator memory ({', '.join(parts)}); "
                f"≈ {format_seconds(self.step_time_s)}/step on {dev}")

    def fits(self, device_bytes: int, headroom: float = 0.9) -> bool:
        """Whether the estimate fits a device with `device_bytes`, keeping 10% spare."""
        return self.total_bytes <= device_bytes * headroom


def format_bytes(n: float) -> str:
    """A size in B, kB, MB or GB (decimal units)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    """A duration in µs, ms, s or min."""
    if s >= 60:
        return f"{s / 60:.1f} min"
    if s >= 0.1:
        return f"{s:.1f} s"
    if s >= 0.001:
        return f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.0f} µs"


def lora_params(spec: models.ModelSpec, rank: int) -> int:
    """The LoRA adapters' parameter count at `rank` (every attention and MLP einsum)."""
    d, f = spec.embed_dim, spec.hidden_dim
    nh, kh = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    return spec.num_layers * rank * (5 * d + 2 * nh + 2 * kh + 3 * f)


def activation_bytes(spec: models.ModelSpec, batch: int, seq: int, bytes_per: int) -> int:
    """Activations kept for the backward pass of `batch` sequences of `seq` tokens."""
    d, f, n, k, h = spec.embed_dim, spec.hidden_dim, spec.num_heads, spec.num_kv_heads, spec.head_dim
    per_token = (10 * d  # residual stream, pre/post norms, attention and MLP outputs
                 + 2 * n * h + 2 * k * h  # q (and rotated q), k, v
                 + n * h  # attention output per head
                 + 4 * f  # gate and up projections (2F), activation, product
                 + 3 * n * seq)  # attention logits, masked logits, probabilities
    layers = spec.num_layers * batch * seq * per_token * bytes_per
    hidden = 2 * batch * seq * d * bytes_per  # final norm in/out
    chunk = min(batch * seq * spec.vocab_size * 4, CHUNK_LOGITS_BYTES) * 3  # logits, softmax, grad
    return int(layers + hidden + chunk)


def _get(config: Any, name: str, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def spec_for(model: str) -> models.ModelSpec:
    """The table entry of a model name, or of a local checkpoint dir (from its
    gemma_ft_model.json, else the embedding shape in orbax's _METADATA)."""
    if model in models.MODELS:
        return models.MODELS[model]
    path = os.path.expanduser(model)
    folders = [path]
    if os.path.isdir(path):  # a kaggle download nests the checkpoint one level down
        folders += [os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith(".")]
    for folder in folders:
        info = os.path.join(folder, "gemma_ft_model.json")
        if os.path.isfile(info):
            with open(info, encoding="utf-8") as f:
                arch = json.load(f).get("architecture")
            if arch in models.MODELS:
                return models.MODELS[arch]
        meta = os.path.join(folder, "_METADATA")
        if os.path.isfile(meta):
            spec = _spec_from_orbax_metadata(meta)
            if spec:
                return spec
    raise ValueError(f"cannot tell the architecture of {model!r}")


def _spec_from_orbax_metadata(path: str) -> models.ModelSpec | None:
    """Match the embedding shape and layer count in orbax's JSON metadata to the table
    (NESTED `('embedder', 'input_embedding')` or FLAT `transformer/embedder` keys)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = json.load(f).get("tree_metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    emb, layers = None, set()
    for entry in tree.values():
        keys = [str(k.get("key")) for k in entry.get("key_metadata", [])]
        name = "/".join(keys)
        for part in name.split("/"):
            if part.startswith("layer_") and part[6:].isdigit():
                layers.add(part)
        if name.endswith("input_embedding"):
            emb = tuple(entry.get("value_metadata", {}).get("write_shape") or ())
    for spec in models.MODELS.values():
        if emb == (spec.vocab_size, spec.embed_dim) and len(layers) == spec.num_layers:
            return spec
    return None


def estimate(config: Any, device: str | None = None, num_devices: int = 1) -> Estimate:
    """Memory per device and time per step for `config` (TrainingConfig or dict).

    device: 'gpu', 'tpu' or 'cpu' (default: 'cpu' for tiny, else 'gpu').
    num_devices: data parallel over that many devices: the batch (activations, time) is split;
    weights are replicated, or split too when the config has fsdp (the frozen base in LoRA,
    params and optimizer state in full fine-tuning).
    """
    spec = spec_for(_get(config, "model", "tiny"))
    method = _get(config, "method", "lora")
    rank = int(_get(config, "lora_rank", 8))
    batch = int(_get(config, "batch_size", 8))
    accum = max(1, int(_get(config, "grad_accum_steps", 1)))  # micro-batches per step
    seq = int(_get(config, "max_seq_len", 128))
    dtype = _get(config, "dtype", "auto")
    if device is None:
        device = "cpu" if spec.family == "tiny" else "gpu"
    if dtype == "float32" or (dtype == "auto" and device == "cpu"):
        bpp = 4
    else:
        bpp = 2

    n = max(1, int(num_devices))
    split = n if _get(config, "fsdp", False) else 1
    quant = _get(config, "quantization", "none") if method == "lora" else "none"
    weights = _weights_bytes(spec, bpp, quant, split)
    n_lora = lora_params(spec, rank) if method == "lora" else 0
    trainable = n_lora if method == "lora" else spec.params
    lora_b = n_lora * 4  # LoRA adapters are kept in f32 (train/lora.py MASTER_DTYPE)
    state_bytes = 4 if method == "lora" else bpp
    opt_split = split if method == "full" else 1
    # Accumulation keeps a running gradient sum beside the micro-batch's gradient.
    grads = trainable * state_bytes // opt_split * (2 if accum > 1 else 1)
    adam = 2 * trainable * state_bytes // opt_split
    acts = _activations_bytes(spec, max(1, batch // n), seq, bpp, quant, _get(config, "remat", "none"))
    total = weights + lora_b + grads + adam + acts

    tokens = batch * seq * accum
    dense = (4 if method == "lora" else 6) * spec.params * tokens
    attention = 12 * spec.num_layers * seq * spec.num_heads * spec.head_dim * tokens
    flops = float(dense + attention)
    step_time = flops / (n * _flops_rate(device))
    return Estimate(model=spec.name, method=method, params=spec.params, trainable_params=trainable,
                    bytes_per_param=bpp, weights_bytes=weights, lora_bytes=lora_b,
                    gradients_bytes=grads, optimizer_bytes=grads + adam, activations_bytes=acts,
                    total_bytes=total, flops_per_step=flops, step_time_s=step_time, device=device,
                    tokens_per_step=tokens)


def _einsum_params(spec) -> int:
    """The parameters outside the embedding (the ones quantization shrinks)."""
    return max(0, spec.params - spec.vocab_size * spec.embed_dim)


def _weights_bytes(spec, bpp: int, quant: str, split: int) -> int:
    """The model's weights on one device: quantized einsums, split over `split` devices (fsdp)."""
    if quant in QUANT_BITS:
        embedding = spec.vocab_size * spec.embed_dim
        return (embedding * bpp + _einsum_params(spec) * QUANT_BITS[quant] // 8) // split
    return spec.params * bpp // split


def _activations_bytes(spec, batch: int, seq: int, bpp: int, quant: str, remat: str) -> int:
    """Activations kept for the backward pass of one device's `batch`, with remat and the
    dequantized weights of a quantized base."""
    acts = activation_bytes(spec, batch, seq, bpp)
    dequantized = _einsum_params(spec) * bpp if quant in QUANT_BITS else 0  # kept for the backward pass
    if remat == "block":
        layers = spec.num_layers
        per_layer = activation_bytes(dataclasses.replace(spec, num_layers=1), batch, seq, bpp) \
            - activation_bytes(dataclasses.replace(spec, num_layers=0), batch, seq, bpp)
        acts = acts - layers * per_layer + per_layer + layers * batch * seq * spec.embed_dim * bpp
        dequantized //= max(1, layers)
    return acts + dequantized


def _flops_rate(device: str) -> float:
    """FLOP/s of one device: this CPU's measured matmul rate (calibrate.py, cached per
    machine), else the table's figure for the kind."""
    if device == "cpu":
        from .calibrate import cpu_flops

        return cpu_flops()
    return DEVICE_FLOPS.get(device, DEVICE_FLOPS["gpu"])


# -- does it fit this machine? ------------------------------------------------------------------
def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def _nvidia_memory() -> list[int]:
    """Total memory of each NVIDIA GPU (nvidia-smi), [] when there is none."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(x) * 2**20 for x in out.stdout.split() if x.isdigit()] if out.returncode == 0 else []


def machine_memory() -> tuple[int, list[int]]:
    """(host RAM this process may use: the machine's, or its container's limit; each GPU's)."""
    import psutil

    ram = psutil.virtual_memory().total
    limit = _cgroup_limit()
    return (min(ram, limit) if limit else ram), _nvidia_memory()


def fit_problem(config: Any, memory: tuple[int, list[int]] | None = None) -> tuple[str, str] | None:
    """(field, why) when the config cannot fit this machine at all, else None.

    Lenient on purpose: the estimate for the device the run would use must fit the host RAM
    plus every GPU's memory together; what fails that cannot train here whatever is placed
    where. The field named is the one behind the largest part (for the form)."""
    ram, gpus = memory or machine_memory()
    try:
        est = estimate(config, device="gpu" if gpus else "cpu", num_devices=max(1, len(gpus)))
    except (ValueError, OSError):
        return None  # an architecture the table does not know: the trainer will say
    per_device = est.total_bytes
    total = per_device * max(1, len(gpus))
    have = ram + sum(gpus)
    if total <= have:
        return None
    parts = {"max_seq_len": est.activations_bytes, "lora_rank": est.lora_bytes + (est.optimizer_bytes if est.method == "lora" else 0),
             "model": est.weights_bytes + (est.optimizer_bytes if est.method == "full" else 0)}
    field = max(parts, key=parts.get)
    where = f"{format_bytes(ram)} of RAM" + (f" and {len(gpus)} GPU(s) with {format_bytes(sum(gpus))}" if gpus else "")
    hint = {"max_seq_len": "lower max_seq_len or batch_size", "lora_rank": "lower lora_rank",
            "model": "use a smaller model or LoRA"}[field]
    return field, f"cannot fit this machine: the estimate is {est.summary()}, and it has {where}; {hint}"
