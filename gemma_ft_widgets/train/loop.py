"""The training process: `python -m gemma_ft_widgets.train RUN_DIR`.

Reads RUN_DIR/model_config.json, resumes from the newest complete checkpoint, trains, and
speaks to the rest of the system only through files (docs/ARCHITECTURE.md, "Trainer protocol"):
events in metrics.jsonl, TensorBoard scalars, orbax checkpoints, the exit code.

Signals: SIGINT or SIGTERM only set a flag. The loop finishes the step in flight, saves a
checkpoint, writes `final` ABORTED and exits 3. SIGINT lets an eval in progress finish;
SIGTERM cuts it short.

Speed: the jitted step is dispatched asynchronously and the loop never waits for it except
to log: the metrics of step n are read after step n+1 has been queued, so the device is never
idle while Python writes events. Batches are prepared on the host while the device computes.
Checkpoints are written by a background thread (checkpoints.BackgroundSaver): the loop waits
only for a host copy of the state; the `checkpoint` event is written once step_N is complete
(renamed); at most one save is in flight, and the final save, `final` and exit wait for it.
A failed background save fails the run (its exception is raised in the loop).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
import traceback
import warnings

from .. import contract

T_PROCESS = time.time()


class SetupError(Exception):
    """A problem of the config, data or model found before training: exit 2."""


class NoAcceleratorError(Exception):
    """The machine has a GPU or TPU that jax does not see: exit 4, before any weights load."""


def check_devices(devices, allow_cpu: bool) -> None:
    """Refuse to train on the CPU by accident: jax falls back to it silently when its GPU/TPU
    plugin is missing or does not match jaxlib (a pip install that replaced a runtime's jax)."""
    from .. import accelerator

    if allow_cpu or any(d.platform != "cpu" for d in devices):
        return
    accel = accelerator.detect()
    if accel.present:
        raise NoAcceleratorError(accelerator.no_accelerator_message(accel, accelerator.jax_stack()))


class Diverged(Exception):
    """The loss or gradient norm became NaN/Infinity: the run fails (exit 5), and nothing
    from that step on is saved."""

    def __init__(self, what: str, value: float, step: int):
        self.what, self.value, self.step = what, value, step
        super().__init__(f"{what} became {_name(value)} at step {step}")


def _name(value: float) -> str:
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def first_nonfinite(first_step: int, losses, grad_norms) -> Diverged | None:
    """The first step of a window whose loss or gradient norm is not finite."""
    for i, (loss, norm) in enumerate(zip(losses, grad_norms)):
        if not math.isfinite(loss):
            return Diverged("loss", loss, first_step + i)
        if not math.isfinite(norm):
            return Diverged("gradient norm", norm, first_step + i)
    return None


class FolderGone(Exception):
    """The run folder was moved or deleted while training: exit 6, never re-create it."""


class StopFlag:
    """SIGINT/SIGTERM -> a flag the loop polls between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def install(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):  # noqa: ARG002
        # SIGTERM after SIGINT upgrades the stop to "no eval".
        if self.signum is None or signum == signal.SIGTERM:
            self.signum = signum

    def refresh(self) -> None:
        """One process decides alone (distributed.AgreedStop combines several)."""

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def hard(self) -> bool:
        return self.signum == signal.SIGTERM


def data_line(summary: dict, max_seq_len: int) -> str:
    """What the data holds, for the trainer's stdout (the panel says the same from the event)."""
    from ..datasets import cut_note

    line = (f"data: {summary.get('format')} format, {summary.get('train_examples')} train / "
            f"{summary.get('eval_examples')} eval examples")
    note = cut_note({"max_seq_len": max_seq_len, **summary})
    return line + (f"; {note}" if note else "")


def _attempt(run_dir: str) -> int:
    env = os.environ.get(contract.ATTEMPT_ENV)
    if env and env.isdigit():
        return int(env)
    lock = os.path.join(os.path.dirname(os.path.abspath(run_dir)), contract.LOCK_NAME)
    try:
        data = contract.read_json(lock)
        if os.path.abspath(data.get("run_dir", "")) == os.path.abspath(run_dir) and data.get("attempt"):
            return int(data["attempt"])
    except (FileNotFoundError, ValueError, TypeError, OSError):
        pass
    starts = [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME))
              if e.get("event") == "start"]
    return len(starts) + 1


class _HostMemory:
    """This process's RSS, read at most once per `every` seconds: a step event carries it, and
    on a fast step (a few ms) a psutil read every step would be a measurable share of the loop."""

    def __init__(self, every: float = 1.0):
        self.every = every
        self._at, self._value = -1e9, None
        try:
            import psutil

            self._proc = psutil.Process()
        except Exception:  # noqa: BLE001
            self._proc = None

    def rss(self) -> int | None:
        if self._proc is None:
            return None
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at = now
            try:
                self._value = int(self._proc.memory_info().rss)
            except Exception:  # noqa: BLE001
                self._value = None
        return self._value


def device_memory(devices) -> tuple[int | None, int | None]:
    """(bytes in use, peak bytes) summed over local devices; (None, None) when the backend
    has no memory stats (CPU)."""
    used = peak = 0
    any_stats = False
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001
            stats = None
        if stats:
            any_stats = True
            used += int(stats.get("bytes_in_use", 0))
            peak += int(stats.get("peak_bytes_in_use", 0))
    return (used, peak) if any_stats else (None, None)


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


@dataclasses.dataclass
class TrainResult:
    state: str  # FINISHED | ABORTED
    step: int
    checkpoint: str | None  # relative to the run folder
    losses: dict[int, float]  # logged step -> loss
    eval_losses: dict[int, float]


class Trainer:
    """One training attempt in a run folder. `Trainer(run_dir).run()` -> TrainResult.

    Tests build it directly; `fsdp_min_bytes` lowers the FSDP size threshold so the tiny
    model's arrays get sharded too.
    """

    def __init__(self, run_dir: str, config=None, stop: StopFlag | None = None,
                 fsdp_min_bytes: int | None = None, log=None):
        from ..config import TrainingConfig

        self.run_dir = os.path.abspath(run_dir)
        self.config = config or TrainingConfig.from_json_file(os.path.join(self.run_dir, contract.CONFIG_NAME))
        self.stop = stop or StopFlag()
        self.fsdp_min_bytes = fsdp_min_bytes
        self.metrics_path = os.path.join(self.run_dir, contract.METRICS_NAME)
        self.folder_id = contract.folder_identity(self.run_dir)
        self._log = log or (lambda msg: print(msg, flush=True))
        self._mem = _HostMemory()
        self.report = None  # process_report.ProcessReport, in a run of several processes
        self._saver = None
        self._metrics = None  # contract.JsonlAppender, opened by the first event
        from . import phases

        self.phases = phases.Reporter(self.event)  # STARTING progress: `phase` events
        from . import distributed

        # Several processes (jax.distributed, initialised by run()): process 0 writes the files.
        self.processes = distributed.process_count()
        self.chief = distributed.is_chief()
        if self.processes > 1 and not isinstance(self.stop, distributed.AgreedStop):
            self.stop = distributed.AgreedStop(self.stop)

    @property
    def saver(self):
        if self._saver is None:
            from .checkpoints import BackgroundSaver, SyncSaver

            self._saver = SyncSaver() if self.processes > 1 else BackgroundSaver()
        return self._saver

    def close(self) -> None:
        """Wait for a checkpoint save in flight and close TensorBoard; idempotent. After an
        error too, before the process exits (a save's own failure is raised by train())."""
        # Not waiting for a sampler warm-up still compiling: a stop must not wait for it, and the
        # trainer process leaves with os._exit (train/__main__.py), which ends the thread cleanly.
        if self._saver is not None:
            try:
                self._saver.wait()
            except Exception as e:  # noqa: BLE001 - the run has failed already
                print(f"checkpoint save failed as well: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if getattr(self, "tb", None) is not None:
            self.tb.close()
            self.tb = None
        if self._saver is not None:
            self._saver.close()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    # -- events ---------------------------------------------------------------------------
    def event(self, name: str, **fields) -> dict:
        ev = {"event": name, "time": time.time(), **fields}
        if not self.chief:
            return ev
        if self._metrics is None:
            self._metrics = contract.JsonlAppender(self.metrics_path)
        self._metrics.append(ev)
        return ev

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        import jax

        from .. import datasets
        from . import (
            checkpoints,
            data,
            distributed,
            eval_samples,
            lora,
            models,
            optim,
            phases,
            quantize,
            remat,
            sharding,
            step,
        )

        cfg = self.config
        self.devices = jax.devices()
        check_devices(self.devices, cfg.allow_cpu)
        n_dev = len(self.devices)
        self.event("devices", platform=self.devices[0].platform, device_kind=self.devices[0].device_kind,
                   count=n_dev, processes=jax.process_count(), local_count=jax.local_device_count())
        if self.processes > 1:  # each process's own devices and memory (process 0 cannot see them)
            from .process_report import ProcessReport

            self.report = ProcessReport(self.run_dir, jax.process_index(), jax.local_devices())
            self.report.write(self._mem.rss(), device_memory(jax.local_devices())[0], None, force=True)
        if cfg.batch_size % n_dev:
            raise SetupError(f"batch_size {cfg.batch_size} must be a multiple of the {n_dev} devices "
                             f"jax sees ({self.devices[0].platform}); use {n_dev * max(1, cfg.batch_size // n_dev)}")
        self.mesh = sharding.make_mesh(self.devices)
        rep = sharding.replicated(self.mesh)
        min_bytes = self.fsdp_min_bytes if self.fsdp_min_bytes is not None else sharding.FSDP_MIN_BYTES

        def shard_fn(tree):
            return sharding.param_shardings(tree, self.mesh, cfg.fsdp, min_bytes)

        t = time.time()
        try:
            loaded = phases.load_model_reporting(self, lambda: models.load_model(
                cfg.model, seed=cfg.seed, dtype_name=cfg.dtype, param_sharding=shard_fn))
        except models.ModelLoadError as e:
            raise SetupError(str(e)) from e
        self.loaded = loaded
        self._log(f"model {loaded.spec.name}: {models.param_count(loaded.params):,} params from "
                  f"{loaded.source} in {time.time() - t:.1f}s, dtype {jax.numpy.dtype(loaded.dtype).name}, "
                  f"{n_dev} {self.devices[0].platform} device(s){', FSDP' if cfg.fsdp else ''}")

        self.phases.begin("data")
        try:
            self.data = data.prepare(cfg.dataset, cfg.dataset_format, loaded.tokenizer, cfg.max_seq_len,
                                     cfg.eval_fraction, cfg.seed, progress=lambda done, total: self.phases.progress(
                                         "data", done, total, "tokenized"))
        except datasets.DatasetError as e:
            raise SetupError(str(e)) from e
        self.is_lora = cfg.method == "lora"
        dropout = cfg.lora_dropout if self.is_lora else 0.0
        # A step's batch holds grad_accum_steps micro-batches (step.make_steps adds their gradients).
        self.batches = data.Batches(self.data.train, cfg.batch_size * cfg.grad_accum_steps, cfg.seed,
                                    step_column=dropout > 0)
        self.samples = eval_samples.EvalSampler.create(self)  # greedy samples at each eval

        base = remat.apply(loaded.model, cfg.remat)
        if self.is_lora:
            self.model = quantize.wrap_lora(base, cfg.lora_rank, cfg.quantization, dtype=loaded.dtype,
                                            dropout=dropout)
            trainable = lora.init_lora_params(self.model, cfg.seed)
            if models.param_count(trainable) == 0:
                raise SetupError(f"gm.nn.LoRA finds no layer to adapt in {loaded.spec.name} with the "
                                 "installed gemma library; use method 'full' for this model")
            frozen = quantize.frozen_params(self.model, loaded.params, cfg.quantization)
            loaded.params = frozen  # the unquantized weights are not kept
        else:
            self.model = base
            trainable, frozen = loaded.params, {}
        self.tx, self.schedule = optim.for_config(cfg)
        if cfg.schedule_steps and cfg.schedule_steps < cfg.max_steps and cfg.lr_schedule != "constant":
            self._log(f"schedule: {cfg.lr_schedule} decay ends at step {cfg.schedule_steps}; the learning rate then stays at "
                      f"{cfg.learning_rate * optim.END_LR_FRACTION:g} to step {cfg.max_steps}")

        # Placement: batch split over the mesh; params replicated, or FSDP (frozen base in
        # LoRA; params + optimizer state in full fine-tuning).
        lora_fsdp = cfg.fsdp and not self.is_lora
        p_sh = sharding.param_shardings(trainable, self.mesh, lora_fsdp, min_bytes)
        f_sh = shard_fn(frozen)
        abstract_opt = jax.eval_shape(self.tx.init, trainable)
        o_sh = sharding.param_shardings(abstract_opt, self.mesh, lora_fsdp, min_bytes)
        self.b_sh = sharding.batch_sharding(self.mesh)
        self.trainable = distributed.put(trainable, p_sh)
        self.frozen = distributed.put(frozen, f_sh)
        self.opt_state = jax.jit(self.tx.init, out_shardings=o_sh)(self.trainable)
        self.trainable_count = models.param_count(self.trainable)

        softcap = getattr(getattr(base, "config", None), "final_logit_softcap", None)
        self.chunked = step.supports_chunked_loss(base)
        # Chunks of the f32 logits: 1 (computed whole, no recomputation) unless they exceed
        # step.CHUNK_BYTES.
        self.loss_chunks = (step.loss_chunks(cfg.batch_size, cfg.max_seq_len,
                                             loaded.params["embedder"]["input_embedding"].shape[0])
                            if self.chunked else None)
        # The lr of update k is schedule(k): vectorised over a block of steps at a time, never
        # an array of max_steps values (10^9 steps would be gigabytes).
        self.lrs = LrTable(self.schedule)
        self.tb = self._scalar_writer()
        self.train_step, self.eval_step = step.make_steps(
            self.model, self.tx, self.is_lora, self.chunked, softcap,
            shardings=(p_sh, o_sh, f_sh, self.b_sh, rep), compute_dtype=loaded.dtype,
            accum_steps=cfg.grad_accum_steps, dropout_seed=cfg.seed if dropout > 0 else None,
            lora_scale=lora.scale(cfg.lora_alpha, cfg.lora_rank) if self.is_lora else 1.0)

        # Resume from the newest checkpoint that restores; a damaged one is kept, marked and skipped.
        if self.chief:
            checkpoints.clean_partials(self.run_dir)
        distributed.barrier("resume-listing")  # every process then finds the same newest one
        self.step = 0
        damaged = []
        for ckpt_step in reversed(contract.checkpoint_steps(self.run_dir)):
            path = contract.checkpoint_path(self.run_dir, ckpt_step)
            saved_by = checkpoints.saved_processes(path)
            if saved_by != self.processes:
                raise SetupError(f"{contract.checkpoint_rel(ckpt_step)} was saved by "
                                 f"{saved_by} process(es); resume it with num_processes {saved_by} "
                                 f"(this attempt has {self.processes})")
            meta = checkpoints.read_meta(path)
            self.phases.begin("restore", step=ckpt_step)
            try:
                trainable, opt_state, restored_step, position = checkpoints.restore_verified(
                    path, self.trainable, self.opt_state, ckpt_step)
            except checkpoints.DamagedCheckpoint as e:
                # One process renames it (the others see the same failure on the same folder).
                marked = (contract.mark_damaged(self.run_dir, ckpt_step, str(e)) if self.chief
                          else "(marked by process 0)")
                damaged.append(f"{contract.checkpoint_name(ckpt_step)} ({e})")
                self.event("checkpoint_damaged", step=ckpt_step, reason=str(e), kept_as=marked)
                print(f"warning: checkpoint {contract.checkpoint_name(ckpt_step)} cannot be restored: {e}; "
                      f"kept as {marked}; trying the previous one", file=sys.stderr, flush=True)
                continue
            if meta.get("config_hash") and meta["config_hash"] != checkpoints.config_hash(cfg.to_dict()):
                print(f"warning: {path} was written with a different config; resuming anyway",
                      file=sys.stderr)
            self.trainable, self.opt_state, self.step = trainable, opt_state, restored_step
            if position != self.batches.position(self.step):
                print(f"warning: checkpoint data position {position} != step*batch "
                      f"{self.batches.position(self.step)} (batch size changed?)", file=sys.stderr)
            self._log(f"resumed from {path}" + (f" (skipped damaged: {'; '.join(damaged)})" if damaged else ""))
            break
        else:
            if damaged:  # never train from scratch over a run's history without being asked
                raise SetupError("no checkpoint of this run can be restored: " + "; ".join(damaged)
                                 + ". They are kept; start a new run, or restore a copy of a checkpoint")

    # -- pieces of the loop ------------------------------------------------------------------
    def compile(self) -> float:
        import jax

        t = time.time()
        from . import distributed

        batch = distributed.put(self.batches.batch(self.step), self.b_sh)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*donated buffers.*")
            self.train_compiled = self.train_step.lower(self.trainable, self.opt_state, self.frozen, batch).compile()
        seconds = time.time() - t
        self.step_fn = self.train_compiled
        if any(x.dtype == jax.numpy.int4 for x in jax.tree.leaves(self.frozen)):
            # The compiled step wants int4 arguments packed two to a byte, and arrays placed with
            # a NamedSharding are not (jax 0.10, CPU), so the AOT call refuses them; the jitted
            # function accepts them (at the price of a second compile, at the first step).
            self.step_fn = self.train_step
        self.memory_analysis = _memory_analysis(self.train_compiled)
        return seconds

    def evaluate(self) -> float | None:

        from . import data, distributed

        if len(self.data.eval) == 0:
            return None
        total = count = 0.0
        for batch in data.eval_batches(self.data.eval, self.config.batch_size):
            if self.stop.hard:
                return None
            s, c = self.eval_step(self.trainable, self.frozen, distributed.put(batch, self.b_sh))
            total += float(s)
            count += float(c)
        return total / max(count, 1.0)

    def save(self, last_loss: float | None) -> str:
        """Start saving a checkpoint of the current step; returns its path relative to the run
        folder. Waits for the previous save and for a host copy of the state; the rest (write,
        rename, prune, then the `checkpoint` event and log line) runs in the background."""
        from . import checkpoints

        cfg = self.config
        step_n = self.step
        self.check_folder()
        bad = checkpoints.nonfinite_count((self.trainable, self.opt_state))
        if bad:  # a finite loss can still leave overflowed weights behind: never save those
            raise Diverged("the weights", float("nan"), step_n)
        meta = {"epoch": self.batches.epoch(step_n), "method": cfg.method, "model": cfg.model,
                "config_hash": checkpoints.config_hash(cfg.to_dict()), "saved_at": contract.utc_now(),
                "loss": last_loss, "trainable_params": self.trainable_count, "num_processes": self.processes}
        rel = os.path.relpath(contract.checkpoint_path(self.run_dir, step_n), self.run_dir)

        def done(path, seconds):  # in the save's thread, once step_N is complete
            self.event("checkpoint", step=step_n, path=rel, seconds=round(seconds, 3))
            self._log(f"checkpoint {rel} ({seconds:.2f}s)")

        self.saver.submit(self.run_dir, step_n, self.trainable, self.opt_state,
                          self.batches.position(step_n), meta, cfg.keep_checkpoints, on_done=done)
        return rel

    def check_folder(self) -> None:
        """Before each save: is the run folder still the one this attempt started in?"""
        if contract.folder_identity(self.run_dir) == self.folder_id:
            return
        moved = contract.where_now(1)  # our stdout is the run folder's trainer_stdout.log
        if moved and moved != self.run_dir and contract.folder_identity(moved) == self.folder_id:
            raise FolderGone(f"the run folder {self.run_dir} was moved to {moved} while training")
        raise FolderGone(f"the run folder {self.run_dir} was deleted or replaced while training")

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Start event, setup (model, data, resume), then `train()`."""
        from . import checkpoints

        cfg = self.config
        resume = checkpoints.latest(self.run_dir)
        self.event("start", attempt=_attempt(self.run_dir), resume_step=resume,
                   max_steps=cfg.max_steps, pid=os.getpid())
        self.setup()
        summary = self.data.summary()
        self.event("data", **summary, max_seq_len=cfg.max_seq_len,
                   steps_per_epoch=round(len(self.data.train) / cfg.batch_size, 2))
        self._log(data_line(summary, cfg.max_seq_len))
        return self.train()

    def train(self) -> TrainResult:
        """The loop, from `self.step` to max_steps or a stop signal (after `setup()`)."""
        try:
            return self._train()
        except BaseException:
            # Exit waits for a save in flight; the error being raised stays the run's reason.
            saver, self._saver = self._saver, None
            if saver is not None:
                try:
                    saver.wait()
                except Exception as e:  # noqa: BLE001
                    print(f"checkpoint save failed as well: {type(e).__name__}: {e}", file=sys.stderr,
                          flush=True)
            raise

    def _train(self) -> TrainResult:
        import jax

        from . import data, distributed, phases

        cfg = self.config
        if getattr(self, "tb", None) is None:
            self.tb = self._scalar_writer()
        tb = self.tb
        losses: dict[int, float] = {}
        evals: dict[int, float] = {}
        last_ckpt = None
        if self.step > 0:
            last_ckpt = os.path.relpath(contract.checkpoint_path(self.run_dir, self.step), self.run_dir)

        self.stop.refresh()
        if self.stop.requested:  # stopped while loading: nothing new to save
            return self._final(tb, "ABORTED", last_ckpt, losses, evals)
        if self.step >= cfg.max_steps:
            return self._final(tb, "FINISHED", last_ckpt, losses, evals)

        if getattr(self, "train_compiled", None) is None:
            if getattr(self, "samples", None) is not None:
                self.samples.warm_up()  # the sampler compiles while the train step does
            seconds = phases.compile_with_guide(self)
            self.event("compile", seconds=round(seconds, 3), **self.memory_analysis,
                       trainable_params=self.trainable_count,
                       chunked_loss=(self.loss_chunks or 1) > 1, loss_chunks=self.loss_chunks)
            self._log(f"compiled the train step in {seconds:.1f}s")

        lrs = self.lrs
        window_norms: list = []  # gradient norms (device scalars) of the same steps
        log_every, eval_every, ckpt_every = cfg.log_every, cfg.eval_every, cfg.checkpoint_every
        window_losses: list = []  # device scalars since the last step event
        window_tokens = 0
        pending = None  # (step, [loss arrays], tokens): logged once the next step is queued
        t_last = time.time()
        last_loss = None
        devices = jax.local_devices()  # memory_stats() answers for this process's devices only
        report = self.report
        announced: list[int] = []
        saver = self.saver
        device_mem = [-1e9, None]  # (when read, bytes in use): read at most once a second

        def emit(entry):
            nonlocal t_last, last_loss
            step_n, loss_arrays, norm_arrays, tokens = entry
            vals, norms = jax.device_get((loss_arrays, norm_arrays))
            vals, norms = [float(x) for x in vals], [float(x) for x in norms]
            diverged = first_nonfinite(step_n - len(vals) + 1, vals, norms)
            now = time.time()
            dt = max(now - t_last, 1e-9)
            t_last = now
            loss = sum(vals) / len(vals)
            last_loss = loss
            losses[step_n] = loss
            lr = float(lrs[step_n - 1])
            if time.monotonic() - device_mem[0] >= 1.0:
                device_mem[:] = [time.monotonic(), device_memory(devices)[0]]
            used = device_mem[1]
            self.event("step", step=step_n, loss=loss, lr=lr, grad_norm=sum(norms) / len(norms),
                       tokens_per_s=round(tokens / dt, 1),
                       step_time_s=round(dt / len(vals), 6), elapsed_s=round(now - T_PROCESS, 3),
                       device_mem_bytes=used, host_rss_bytes=self._mem.rss())
            if report is not None:
                report.write(self._mem.rss(), used, step_n)
            tb.scalars(step_n, {"loss": loss, "lr": lr, "grad_norm": sum(norms) / len(norms),
                                "tokens_per_s": tokens / dt})
            if not announced:  # status.log gets one RUNNING line per attempt, at its first step
                announced.append(step_n)
                if self.chief:
                    contract.append_status(self.run_dir, "RUNNING", f"first step {step_n} logged")
            if diverged is not None:
                raise diverged

        def check_window():
            """Before a save: the steps not logged yet must be finite too."""
            if window_losses:
                vals, norms = jax.device_get((window_losses, window_norms))
                diverged = first_nonfinite(self.step - len(vals) + 1, [float(x) for x in vals],
                                           [float(x) for x in norms])
                if diverged is not None:
                    raise diverged

        def flush():
            nonlocal pending
            if pending is not None:
                emit(pending)
                pending = None

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*donated buffers.*")
            while self.step < cfg.max_steps and not self.stop.requested:
                saver.check()  # a background save that failed fails the run here
                host_batch = self.batches.batch(self.step)
                batch = distributed.put(host_batch, self.b_sh)
                self.trainable, self.opt_state, metrics = self.step_fn(
                    self.trainable, self.opt_state, self.frozen, batch)
                self.step += 1
                self.stop.refresh()  # several processes: all see the same flag until the next step
                window_losses.append(metrics["loss"])
                window_norms.append(metrics["grad_norm"])
                window_tokens += data.real_tokens(host_batch)
                if pending is not None:  # step n-1's metrics, read while step n runs
                    emit(pending)
                    pending = None
                at_end = self.step == cfg.max_steps
                first = not announced and pending is None and not losses  # RUNNING shows at once
                if self.step % log_every == 0 or at_end or self.stop.requested or first:
                    pending = (self.step, window_losses, window_norms, window_tokens)
                    window_losses, window_norms, window_tokens = [], [], 0
                if self.step % eval_every == 0 or at_end:
                    flush()
                    ev = self.evaluate()
                    if ev is not None and not math.isfinite(ev):
                        raise Diverged("eval loss", ev, self.step)
                    if ev is not None:
                        evals[self.step] = ev
                        self.event("eval", step=self.step, eval_loss=ev)
                        tb.scalars(self.step, {"eval_loss": ev}, force=True)
                    if getattr(self, "samples", None) is not None and not self.stop.hard:
                        self.samples.run(self.step)  # greedy completions: `sample` events
                    t_last = time.time()  # eval time is not step time
                if (self.step % ckpt_every == 0 or at_end) and not self.stop.requested:
                    flush()
                    check_window()
                    last_ckpt = self.save(last_loss)
                    tb.flush()
                    t_last = time.time()
            if window_losses:
                pending = pending or (self.step, window_losses, window_norms, window_tokens)
            flush()

        if self.stop.requested and self.step < cfg.max_steps:
            here = os.path.relpath(contract.checkpoint_path(self.run_dir, self.step), self.run_dir)
            if last_ckpt != here:
                last_ckpt = self.save(last_loss)
            return self._final(tb, "ABORTED", last_ckpt, losses, evals)
        here = os.path.relpath(contract.checkpoint_path(self.run_dir, self.step), self.run_dir)
        if last_ckpt != here:
            last_ckpt = self.save(last_loss)
        return self._final(tb, "FINISHED", last_ckpt, losses, evals)

    def _scalar_writer(self):
        from .tb import NullWriter, ScalarWriter

        return ScalarWriter(self.run_dir) if self.chief else NullWriter()

    def _final(self, tb, state, ckpt, losses, evals) -> TrainResult:
        self.saver.wait()  # every checkpoint complete (and its event written) before `final`
        tb.close()
        self.tb = None
        self.event("final", state=state, step=self.step, checkpoint=ckpt)
        self._log(f"{state} at step {self.step}" + (f", checkpoint {ckpt}" if ckpt else ""))
        return TrainResult(state, self.step, ckpt, losses, evals)


def _diverged(trainer: Trainer, e: Diverged) -> int:
    """Say where the run diverged and which checkpoint is the last good one; exit 5."""
    from . import checkpoints

    try:
        trainer.close()  # a save of an earlier, finite step may be in flight: let it complete
    except Exception:  # noqa: BLE001
        pass
    last = checkpoints.latest(trainer.run_dir)
    kept = (f"the last finite checkpoint is {contract.checkpoint_rel(last)}"
            if last is not None else "no checkpoint was saved before it")
    lr = trainer.config.learning_rate
    trainer.event("diverged", step=e.step, what=e.what, value=_name(e.value), checkpoint=last)
    print(f"error: {e}; training stopped, nothing from that step on is saved; {kept}. "
          f"Try a lower learning_rate (now {lr:g}).", file=sys.stderr, flush=True)
    return contract.EXIT_DIVERGED


def _memory_analysis(compiled) -> dict:
    """XLA's static memory plan of the compiled step (bytes), where the backend gives one."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
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


def run(run_dir: str) -> int:
    """Train in `run_dir`; returns the process exit code (0, 2, 3 or 1)."""
    from ..config import ConfigError, TrainingConfig

    stop = StopFlag().install()
    config_path = os.path.join(run_dir, contract.CONFIG_NAME)
    try:
        config = TrainingConfig.from_json_file(config_path)
    except ConfigError as e:
        print(f"config error in {config_path}:\n{e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    from . import distributed

    trainer = None
    try:
        processes = distributed.initialize()  # before anything touches a device
        if processes != config.num_processes:
            print(f"warning: {processes} trainer process(es), but the config says num_processes "
                  f"{config.num_processes}", file=sys.stderr)
        trainer = Trainer(run_dir, config, stop=stop)
        result = trainer.run()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    except NoAcceleratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return contract.EXIT_NO_ACCELERATOR
    except Diverged as e:
        return _diverged(trainer, e)
    except FolderGone as e:  # the event goes to the open metrics file, wherever it is now
        if trainer is not None and trainer._metrics is not None:
            trainer.event("folder_gone", step=trainer.step, reason=str(e))
        print(f"error: {e}; training stopped at step {trainer.step if trainer else '?'} without saving, "
              "and nothing was re-created at the old path", file=sys.stderr, flush=True)
        return contract.EXIT_FOLDER_GONE
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return contract.EXIT_FAILED
    finally:
        if trainer is not None:
            trainer.close()  # no save in flight, TensorBoard closed: safe to leave with os._exit
        sys.stdout.flush()
        sys.stderr.flush()
    distributed.shutdown()  # a clean end: the processes leave together
    return contract.EXIT_ABORTED if result.state == "ABORTED" else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m gemma_ft_widgets.train RUN_DIR\n\n"
              "Trains as RUN_DIR/model_config.json says; see docs/ARCHITECTURE.md.", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR if argv not in (["-h"], ["--help"]) else 0
    run_dir = argv[0]
    if not os.path.isdir(run_dir):
        print(f"error: run folder not found: {run_dir}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    return run(run_dir)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
