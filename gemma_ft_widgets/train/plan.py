"""The training plan: what a config asks for, built once, apart from the loop that runs it
(as gemma's kauldron trainer declares its pieces apart from its loop).

`build(config, devices, ...)` loads the model and the data, adapts the model (remat, LoRA,
quantization), makes the optimizer and its learning-rate table, the mesh and the placements,
and the jitted train and eval steps; it returns the `Plan` and the initial trainable weights
and optimizer state (the loop owns those from then on: the step donates them).
`Plan.compile(...)` compiles the train step ahead of time. Model and data progress go to
`phases.Reporter` as `phase` events.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

from . import distributed
from .errors import NoAcceleratorError, SetupError


def check_devices(devices, allow_cpu: bool) -> None:
    """Refuse to train on the CPU by accident: jax falls back to it silently when its GPU/TPU
    plugin is missing or does not match jaxlib (a pip install that replaced a runtime's jax)."""
    from .. import accelerator

    if allow_cpu or any(d.platform != "cpu" for d in devices):
        return
    accel = accelerator.detect()
    if accel.present:
        raise NoAcceleratorError(accelerator.no_accelerator_message(accel, accelerator.jax_stack()))


class LrTable:
    """`table[k]`: the learning rate of update k, computed `BLOCK` steps at a time."""

    BLOCK = 4096

    def __init__(self, schedule):
        import jax

        self._fn = jax.jit(jax.vmap(schedule))
        self._start, self._values = -1, None

    def __getitem__(self, k: int) -> float:
        import numpy as np

        start = k - k % self.BLOCK
        if start != self._start:
            self._values = np.asarray(self._fn(np.arange(start, start + self.BLOCK, dtype=np.int32)))
            self._start = start
        return float(self._values[k - start])


def memory_analysis(compiled) -> dict:
    """XLA's static memory plan of the compiled step (bytes), where the backend gives one."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without a memory plan raise various errors
        return {}
    if m is None:
        return {}
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
    out = {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}
    if {"argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes"} <= set(out):
        out["peak_estimate_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                      - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
    return {"memory": out} if out else {}


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where each tree lives on the mesh: the batch split over it; params replicated, or FSDP
    (the frozen base in LoRA; params and optimizer state in full fine-tuning)."""

    params: Any
    opt_state: Any
    frozen: Any
    batch: Any
    replicated: Any


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The train step compiled ahead of time, and what the loop calls."""

    compiled: Any  # jax's Compiled: its memory analysis
    step_fn: Any  # the compiled step, or the jitted one where the compiled one refuses the arguments
    memory_analysis: dict
    seconds: float


@dataclasses.dataclass
class Plan:
    """Everything the loop needs that does not change while it runs."""

    config: Any  # config.TrainingConfig
    devices: list
    mesh: Any
    placement: Placement
    loaded: Any  # models.LoadedModel; its params are the frozen ones in LoRA (unquantized not kept)
    data: Any  # data.Prepared: train and eval arrays, summary()
    batches: Any  # data.Batches: a step's batch holds grad_accum_steps micro-batches
    is_lora: bool
    model: Any  # the network trained: remat applied, LoRA-wrapped in LoRA
    tx: Any  # the optax chain
    schedule: Any
    lrs: LrTable
    frozen: Any  # placed; {} in full fine-tuning
    trainable_count: int
    loss_chunks: int | None  # chunks of the f32 logits in the loss; None: no chunked loss
    train_step: Any  # jitted: (trainable, opt_state, frozen, batch) -> (trainable, opt_state, metrics)
    eval_step: Any  # jitted: (trainable, frozen, batch) -> (loss sum, token count)

    def put_batch(self, host_batch):
        """Place a host batch on the mesh, split along the batch axis."""
        return distributed.put(host_batch, self.placement.batch)

    def compile(self, trainable, opt_state, step: int) -> Compiled:
        """The train step compiled for the batch shape (on the batch of `step`)."""
        import jax

        t = time.time()
        batch = self.put_batch(self.batches.batch(step))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*donated buffers.*")
            compiled = self.train_step.lower(trainable, opt_state, self.frozen, batch).compile()
        seconds = time.time() - t
        step_fn = compiled
        if any(x.dtype == jax.numpy.int4 for x in jax.tree.leaves(self.frozen)):
            # The compiled step wants int4 arguments packed two to a byte, and arrays placed with
            # a NamedSharding are not (jax 0.10, CPU), so the AOT call refuses them; the jitted
            # function accepts them (at the price of a second compile, at the first step).
            step_fn = self.train_step
        return Compiled(compiled, step_fn, memory_analysis(compiled), seconds)

    def evaluate(self, trainable, cut_short) -> float | None:
        """Mean loss per token over the eval split; None without one, or when `cut_short()`."""
        from . import data

        if len(self.data.eval) == 0:
            return None
        total = count = 0.0
        for batch in data.eval_batches(self.data.eval, self.config.batch_size):
            if cut_short():
                return None
            s, c = self.eval_step(trainable, self.frozen, self.put_batch(batch))
            total += float(s)
            count += float(c)
        return total / max(count, 1.0)


def build(config, devices, reporter, log, fsdp_min_bytes: int | None = None) -> tuple[Plan, Any, Any]:
    """(plan, trainable, opt_state) for `config` on `devices` (see the module docstring)."""
    import jax

    from . import lora, models, sharding, step

    cfg = config
    n_dev = len(devices)
    if cfg.batch_size % n_dev:
        raise SetupError(f"batch_size {cfg.batch_size} must be a multiple of the {n_dev} devices "
                         f"jax sees ({devices[0].platform}); use {n_dev * max(1, cfg.batch_size // n_dev)}")
    mesh = sharding.make_mesh(devices)
    min_bytes = fsdp_min_bytes if fsdp_min_bytes is not None else sharding.FSDP_MIN_BYTES
    loaded = _load_model(cfg, devices, mesh, min_bytes, reporter, log)
    prepared, batches = _load_data(cfg, loaded.tokenizer, reporter)
    is_lora, base, model, trainable, frozen = _adapt(cfg, loaded)
    tx, schedule = _optimizer(cfg, log)
    placement = _placement(cfg, mesh, min_bytes, is_lora, trainable, frozen, tx)
    trainable = distributed.put(trainable, placement.params)
    frozen = distributed.put(frozen, placement.frozen)
    opt_state = jax.jit(tx.init, out_shardings=placement.opt_state)(trainable)

    softcap = getattr(getattr(base, "config", None), "final_logit_softcap", None)
    chunked = step.supports_chunked_loss(base)
    # Chunks of the f32 logits: 1 (computed whole, no recomputation) unless they exceed
    # step.CHUNK_BYTES.
    loss_chunks = (step.loss_chunks(cfg.batch_size, cfg.max_seq_len,
                                    loaded.params["embedder"]["input_embedding"].shape[0])
                   if chunked else None)
    dropout = cfg.lora_dropout if is_lora else 0.0
    train_step, eval_step = step.make_steps(
        model, tx, is_lora, chunked, softcap,
        shardings=(placement.params, placement.opt_state, placement.frozen, placement.batch,
                   placement.replicated), compute_dtype=loaded.dtype,
        accum_steps=cfg.grad_accum_steps, dropout_seed=cfg.seed if dropout > 0 else None,
        lora_scale=lora.scale(cfg.lora_alpha, cfg.lora_rank) if is_lora else 1.0)
    # The lr of update k is schedule(k): vectorised over a block of steps at a time, never an
    # array of max_steps values (10^9 steps would be gigabytes).
    plan = Plan(cfg, list(devices), mesh, placement, loaded, prepared, batches, is_lora, model, tx, schedule,
                LrTable(schedule), frozen, models.param_count(trainable), loss_chunks, train_step, eval_step)
    return plan, trainable, opt_state


def _load_model(cfg, devices, mesh, min_bytes: int, reporter, log):
    """models.load_model, placed as it loads (FSDP applies at load time), announced as the
    model phase with download progress."""
    import jax

    from . import models, phases, sharding

    def shard_fn(tree):
        return sharding.param_shardings(tree, mesh, cfg.fsdp, min_bytes)

    t = time.time()
    try:
        loaded = phases.load_model_reporting(reporter, lambda: models.load_model(
            cfg.model, seed=cfg.seed, dtype_name=cfg.dtype, param_sharding=shard_fn))
    except models.ModelLoadError as e:
        raise SetupError(str(e)) from e
    log(f"model {loaded.spec.name}: {models.param_count(loaded.params):,} params from "
        f"{loaded.source} in {time.time() - t:.1f}s, dtype {jax.numpy.dtype(loaded.dtype).name}, "
        f"{len(devices)} {devices[0].platform} device(s){', FSDP' if cfg.fsdp else ''}")
    return loaded


def _load_data(cfg, tokenizer, reporter):
    """The tokenized splits (the data phase, with progress) and the train batches."""
    from .. import datasets
    from . import data

    reporter.begin("data")
    try:
        prepared = data.prepare(cfg.dataset, cfg.dataset_format, tokenizer, cfg.max_seq_len,
                                cfg.eval_fraction, cfg.seed, progress=lambda done, total: reporter.progress(
                                    "data", done, total, "tokenized"))
    except datasets.DatasetError as e:
        raise SetupError(str(e)) from e
    dropout = cfg.lora_dropout if cfg.method == "lora" else 0.0
    # A step's batch holds grad_accum_steps micro-batches (step.make_steps adds their gradients).
    batches = data.Batches(prepared.train, cfg.batch_size * cfg.grad_accum_steps, cfg.seed,
                           step_column=dropout > 0)
    return prepared, batches


def _adapt(cfg, loaded):
    """(is_lora, base, model, trainable, frozen): the base network with remat; for LoRA, wrapped
    with adapters (trainable) over the frozen, maybe quantized, weights, which replace the
    unquantized ones in `loaded`."""
    from . import lora, models, quantize, remat

    is_lora = cfg.method == "lora"
    base = remat.apply(loaded.model, cfg.remat)
    if not is_lora:
        return is_lora, base, base, loaded.params, {}
    model = quantize.wrap_lora(base, cfg.lora_rank, cfg.quantization, dtype=loaded.dtype,
                               dropout=cfg.lora_dropout)
    trainable = lora.init_lora_params(model, cfg.seed)
    if models.param_count(trainable) == 0:
        raise SetupError(f"gm.nn.LoRA finds no layer to adapt in {loaded.spec.name} with the "
                         "installed gemma library; use method 'full' for this model")
    frozen = quantize.frozen_params(model, loaded.params, cfg.quantization)
    loaded.params = frozen  # the unquantized weights are not kept
    return is_lora, base, model, trainable, frozen


def _optimizer(cfg, log):
    from . import optim

    tx, schedule = optim.for_config(cfg)
    if cfg.schedule_steps and cfg.schedule_steps < cfg.max_steps and cfg.lr_schedule != "constant":
        log(f"schedule: {cfg.lr_schedule} decay ends at step {cfg.schedule_steps}; the learning rate then stays at "
            f"{cfg.learning_rate * optim.END_LR_FRACTION:g} to step {cfg.max_steps}")
    return tx, schedule


def _placement(cfg, mesh, min_bytes: int, is_lora: bool, trainable, frozen, tx) -> Placement:
    import jax

    from . import sharding

    lora_fsdp = cfg.fsdp and not is_lora
    abstract_opt = jax.eval_shape(tx.init, trainable)
    return Placement(params=sharding.param_shardings(trainable, mesh, lora_fsdp, min_bytes),
                     opt_state=sharding.param_shardings(abstract_opt, mesh, lora_fsdp, min_bytes),
                     frozen=sharding.param_shardings(frozen, mesh, cfg.fsdp, min_bytes),
                     batch=sharding.batch_sharding(mesh), replicated=sharding.replicated(mesh))
