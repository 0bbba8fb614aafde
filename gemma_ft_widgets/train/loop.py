"""The training process: `python -m gemma_ft_widgets.train RUN_DIR`.

Reads RUN_DIR/model_config.json, resumes from the newest complete checkpoint, trains, and
speaks to the rest of the system only through files (docs/ARCHITECTURE.md, "Trainer protocol"):
events in metrics.jsonl, TensorBoard scalars, orbax checkpoints, the exit code.

The pieces: plan.py builds what the config asks for (model, LoRA, optimizer, batches,
placements, compiled step); `Trainer` here is the loop over it (setup, resume, steps, evals,
saves, `final`); step_log.py writes the `step` events; errors.py holds the failures and their
exit codes, which `run()` maps.

Signals: SIGINT or SIGTERM only set a flag. The loop finishes the step in flight, saves a
checkpoint, writes `final` ABORTED and exits 3. SIGINT lets an eval in progress finish;
SIGTERM cuts it short.

Speed: the jitted step is dispatched asynchronously and the loop never waits for it except
to log: the metrics of step n are read after step n+1 has been queued (step_log.StepLog), so the
device is never idle while Python writes events. Batches are prepared on the host while the device computes.
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
from .errors import Diverged, FolderGone, NoAcceleratorError, SetupError, check_folder, nonfinite_name
from .plan import check_devices
from .step_log import HostMemory, StepLog, device_memory

__all__ = ["Diverged", "FolderGone", "NoAcceleratorError", "SetupError", "StopFlag", "TrainResult", "Trainer",
           "check_devices", "data_line", "device_memory", "main", "run"]


class StopFlag:
    """SIGINT/SIGTERM -> a flag the loop polls between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def install(self) -> StopFlag:
        """Catch SIGINT and SIGTERM (the old handlers kept for `uninstall`); returns self."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Put the handlers `install` replaced back."""
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
        """Whether a stop signal arrived."""
        return self.signum is not None

    @property
    def hard(self) -> bool:
        """Whether the stop came with SIGTERM: no final eval."""
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


def _scalar_writer(run_dir: str, chief: bool):
    """TensorBoard scalars from process 0; the others write none."""
    from .tb import NullWriter, ScalarWriter

    return ScalarWriter(run_dir) if chief else NullWriter()


@dataclasses.dataclass
class TrainResult:
    """How a training attempt ended: FINISHED or ABORTED, its last step and checkpoint, the losses."""

    state: str  # FINISHED | ABORTED
    step: int
    checkpoint: str | None  # relative to the run folder
    losses: dict[int, float]  # logged step -> loss
    eval_losses: dict[int, float]


class Trainer:
    """One training attempt in a run folder. `Trainer(run_dir).run()` -> TrainResult.

    `setup()` builds the plan (train/plan.py: model, data, optimizer, placements, steps) and
    resumes; `train()` is the loop. Tests build it directly; `fsdp_min_bytes` lowers the FSDP
    size threshold so the tiny model's arrays get sharded too.
    """

    def __init__(self, run_dir: str, config=None, stop: StopFlag | None = None,
                 fsdp_min_bytes: int | None = None, log=None):
        from ..config import TrainingConfig
        from . import distributed, phases
        from .checkpoints import BackgroundSaver, SyncSaver

        self.run_dir = os.path.abspath(run_dir)
        self.config = config or TrainingConfig.from_json_file(os.path.join(self.run_dir, contract.CONFIG_NAME))
        self.stop = stop or StopFlag()
        self.fsdp_min_bytes = fsdp_min_bytes
        self.metrics_path = os.path.join(self.run_dir, contract.METRICS_NAME)
        self.folder_id = contract.folder_identity(self.run_dir)
        self._log = log or (lambda msg: print(msg, flush=True))
        self.host_memory = HostMemory()
        self._metrics = None  # contract.JsonlAppender, opened by the first event
        self.phases = phases.Reporter(self.event)  # STARTING progress: `phase` events
        # Several processes (jax.distributed, initialised by run()): process 0 writes the files.
        self.processes = distributed.process_count()
        self.chief = distributed.is_chief()
        if self.processes > 1 and not isinstance(self.stop, distributed.AgreedStop):
            self.stop = distributed.AgreedStop(self.stop)
        self.saver = SyncSaver() if self.processes > 1 else BackgroundSaver()
        # By setup():
        self.plan = None  # plan.Plan
        self.report = None  # process_report.ProcessReport, in a run of several processes
        self.samples = None  # eval_samples.EvalSampler: greedy samples at each eval, if any
        self.tb = None  # tb.ScalarWriter (a NullWriter off process 0), open until `final`
        self.trainable = self.opt_state = None  # the loop's state (the step donates it)
        self.step = 0
        # By compile():
        self.train_compiled = None  # jax's Compiled train step
        self.step_fn = None  # what the loop calls (plan.Compiled.step_fn)
        self.memory_analysis: dict = {}

    # The plan's pieces, under the names tests, benchmarks and eval_samples use.
    devices = property(lambda self: self.plan.devices)
    mesh = property(lambda self: self.plan.mesh)
    b_sh = property(lambda self: self.plan.placement.batch)
    frozen = property(lambda self: self.plan.frozen)
    batches = property(lambda self: self.plan.batches)
    data = property(lambda self: self.plan.data)
    loaded = property(lambda self: self.plan.loaded)
    is_lora = property(lambda self: self.plan.is_lora)
    trainable_count = property(lambda self: self.plan.trainable_count)

    def close(self) -> None:
        """Wait for a checkpoint save in flight and close TensorBoard; idempotent. After an
        error too, before the process exits (a save's own failure is raised by train())."""
        # Not waiting for a sampler warm-up still compiling: a stop must not wait for it, and the
        # trainer process leaves with os._exit (train/__main__.py), which ends the thread cleanly.
        self._wait_for_saves(raise_failure=False)
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.saver.close()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _wait_for_saves(self, raise_failure: bool) -> None:
        """Every checkpoint save complete. A failed save is raised, or, when the run is failing
        already (its own error stays the reason), printed."""
        try:
            self._saves_done(wait=True)
        except Exception as e:  # noqa: BLE001 - whatever the save raised
            if raise_failure:
                raise
            print(f"checkpoint save failed as well: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    # -- events ---------------------------------------------------------------------------
    def event(self, name: str, **fields) -> dict:
        """Append an event to metrics.jsonl (process 0 only); returns it."""
        ev = {"event": name, "time": time.time(), **fields}
        if not self.chief:
            return ev
        if self._metrics is None:
            self._metrics = contract.JsonlAppender(self.metrics_path)
        self._metrics.append(ev)
        return ev

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Devices, the plan (model, data, optimizer, placements, steps), then resume."""
        import jax

        from . import eval_samples, plan

        devices = jax.devices()
        check_devices(devices, self.config.allow_cpu)
        self._announce_devices(devices)
        self.plan, self.trainable, self.opt_state = plan.build(self.config, devices, self.phases, self._log,
                                                               self.fsdp_min_bytes)
        self.samples = eval_samples.EvalSampler.create(self)
        self.tb = _scalar_writer(self.run_dir, self.chief)
        self._resume()

    def _announce_devices(self, devices) -> None:
        import jax

        self.event(contract.EVENT_DEVICES, platform=devices[0].platform, device_kind=devices[0].device_kind,
                   count=len(devices), processes=jax.process_count(), local_count=jax.local_device_count())
        if self.processes > 1:  # each process's own devices and memory (process 0 cannot see them)
            from .process_report import ProcessReport

            self.report = ProcessReport(self.run_dir, jax.process_index(), jax.local_devices())
            self.report.write(self.host_memory.rss(), device_memory(jax.local_devices())[0], None, force=True)

    def _resume(self) -> None:
        """Resume from the newest checkpoint that restores; a damaged one is kept, marked and skipped."""
        from . import checkpoints, distributed

        if self.chief:
            checkpoints.clean_partials(self.run_dir)
        distributed.barrier("resume-listing")  # every process then finds the same newest one
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
            if meta.get("config_hash") and meta["config_hash"] != checkpoints.config_hash(self.config.to_dict()):
                print(f"warning: {path} was written with a different config; resuming anyway",
                      file=sys.stderr)
            self.trainable, self.opt_state, self.step = trainable, opt_state, restored_step
            if position != self.batches.position(self.step):
                print(f"warning: checkpoint data position {position} != step*batch "
                      f"{self.batches.position(self.step)} (batch size changed?)", file=sys.stderr)
            self._log(f"resumed from {path}" + (f" (skipped damaged: {'; '.join(damaged)})" if damaged else ""))
            return
        if damaged:  # never train from scratch over a run's history without being asked
            raise SetupError("no checkpoint of this run can be restored: " + "; ".join(damaged)
                             + ". They are kept; start a new run, or restore a copy of a checkpoint")

    # -- pieces of the loop ------------------------------------------------------------------
    def compile(self) -> float:
        """Compile the train step ahead of time; returns the seconds it took."""
        compiled = self.plan.compile(self.trainable, self.opt_state, self.step)
        self.train_compiled, self.step_fn = compiled.compiled, compiled.step_fn
        self.memory_analysis = compiled.memory_analysis
        return compiled.seconds

    def evaluate(self) -> float | None:
        """The eval loss of the current weights (None: no eval split, or a SIGTERM cut it short)."""
        return self.plan.evaluate(self.trainable, lambda: self.stop.hard)

    def save(self, last_loss: float | None) -> str:
        """Start saving a checkpoint of the current step; returns its path relative to the run
        folder. Waits for the previous save and for a host copy of the state; the rest (write,
        rename, prune, then the `checkpoint` event and log line) runs in the background."""
        from . import checkpoints

        cfg = self.config
        step_n = self.step
        # The previous save first: the folder may be moved while it runs (a checkpoint appearing
        # is when people move a run), and this save must not re-create it under the old name.
        self._saves_done(wait=True)
        check_folder(self.run_dir, self.folder_id)
        bad = checkpoints.nonfinite_count((self.trainable, self.opt_state))
        if bad:  # a finite loss can still leave overflowed weights behind: never save those
            raise Diverged("the weights", float("nan"), step_n)
        meta = {"epoch": self.batches.epoch(step_n), "method": cfg.method, "model": cfg.model,
                "config_hash": checkpoints.config_hash(cfg.to_dict()), "saved_at": contract.utc_now(),
                "loss": last_loss, "trainable_params": self.trainable_count, "num_processes": self.processes}
        rel = self._checkpoint_rel()

        def done(path, seconds):  # in the save's thread, once step_N is complete
            self.event(contract.EVENT_CHECKPOINT, step=step_n, path=rel, seconds=round(seconds, 3))
            self._log(f"checkpoint {rel} ({seconds:.2f}s)")

        self.saver.submit(self.run_dir, step_n, self.trainable, self.opt_state,
                          self.batches.position(step_n), meta, cfg.keep_checkpoints, on_done=done)
        return rel

    def _saves_done(self, wait: bool) -> None:
        """Raise the failure of a finished background save (with `wait`, of the one in flight
        too): FolderGone when it failed because the run folder was moved or deleted under it."""
        try:
            self.saver.wait() if wait else self.saver.check()
        except OSError:
            check_folder(self.run_dir, self.folder_id)
            raise

    def _checkpoint_rel(self) -> str:
        """The current step's checkpoint, relative to the run folder."""
        return os.path.relpath(contract.checkpoint_path(self.run_dir, self.step), self.run_dir)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Start event, setup (model, data, resume), then `train()`."""
        from . import checkpoints

        cfg = self.config
        resume = checkpoints.latest(self.run_dir)
        self.event(contract.EVENT_START, attempt=_attempt(self.run_dir), resume_step=resume,
                   max_steps=cfg.max_steps, pid=os.getpid())
        self.setup()
        summary = self.data.summary()
        self.event(contract.EVENT_DATA, **summary, max_seq_len=cfg.max_seq_len,
                   steps_per_epoch=round(len(self.data.train) / cfg.batch_size, 2))
        self._log(data_line(summary, cfg.max_seq_len))
        return self.train()

    def train(self) -> TrainResult:
        """The loop, from `self.step` to max_steps or a stop signal (after `setup()`)."""
        try:
            return self._train()
        except BaseException:
            # Exit waits for a save in flight; the error being raised stays the run's reason.
            self._wait_for_saves(raise_failure=False)
            raise

    def _train(self) -> TrainResult:
        cfg = self.config
        if self.tb is None:
            self.tb = _scalar_writer(self.run_dir, self.chief)
        last_ckpt = self._checkpoint_rel() if self.step > 0 else None
        self.stop.refresh()
        if self.stop.requested or self.step >= cfg.max_steps:  # stopped while loading: nothing new to save
            return self._final("ABORTED" if self.stop.requested else "FINISHED", last_ckpt, {}, {})
        if self.train_compiled is None:
            self._compile_announced()
        log = StepLog(self, self.tb, self.step)
        evals: dict[int, float] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*donated buffers.*")
            while self.step < cfg.max_steps and not self.stop.requested:
                self._step(log)
                at_end = self.step == cfg.max_steps
                if (self.step % cfg.log_every == 0 or at_end or self.stop.requested
                        or log.nothing_logged):  # the first step is logged at once: RUNNING shows
                    log.close_window()
                if self.step % cfg.eval_every == 0 or at_end:
                    log.emit_pending()
                    self._eval(evals)
                    log.restart_clock()
                if (self.step % cfg.checkpoint_every == 0 or at_end) and not self.stop.requested:
                    log.emit_pending()
                    log.check_window(self.step)
                    last_ckpt = self.save(log.last_loss)
                    self.tb.flush()
                    log.restart_clock()
            log.finish()
        state = "ABORTED" if self.stop.requested and self.step < cfg.max_steps else "FINISHED"
        if last_ckpt != self._checkpoint_rel():
            last_ckpt = self.save(log.last_loss)
        return self._final(state, last_ckpt, log.losses, evals)

    def _compile_announced(self) -> None:
        from . import phases

        if self.samples is not None:
            self.samples.warm_up()  # the sampler compiles while the train step does
        seconds = phases.compile_with_guide(self)
        self.event(contract.EVENT_COMPILE, seconds=round(seconds, 3), **self.memory_analysis,
                   trainable_params=self.trainable_count,
                   chunked_loss=(self.plan.loss_chunks or 1) > 1, loss_chunks=self.plan.loss_chunks)
        self._log(f"compiled the train step in {seconds:.1f}s")

    def _step(self, log: StepLog) -> None:
        """One step queued (not waited for); its metrics go to `log`."""
        self._saves_done(wait=False)  # a background save that failed fails the run here
        host_batch = self.batches.batch(self.step)
        self.trainable, self.opt_state, metrics = self.step_fn(
            self.trainable, self.opt_state, self.frozen, self.plan.put_batch(host_batch))
        self.step += 1
        self.stop.refresh()  # several processes: all see the same flag until the next step
        log.add(self.step, metrics, host_batch)

    def _eval(self, evals: dict[int, float]) -> None:
        """The eval loss (`eval` event), then greedy samples (`sample` events) unless a SIGTERM."""
        ev = self.evaluate()
        if ev is not None and not math.isfinite(ev):
            raise Diverged("eval loss", ev, self.step)
        if ev is not None:
            evals[self.step] = ev
            self.event(contract.EVENT_EVAL, step=self.step, eval_loss=ev)
            self.tb.scalars(self.step, {"eval_loss": ev}, force=True)
        if self.samples is not None and not self.stop.hard:
            self.samples.run(self.step)  # greedy completions: `sample` events

    def _final(self, state, ckpt, losses, evals) -> TrainResult:
        self._wait_for_saves(raise_failure=True)  # every checkpoint complete (its event written) before `final`
        self.tb.close()
        self.tb = None
        self.event(contract.EVENT_FINAL, state=state, step=self.step, checkpoint=ckpt)
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
    trainer.event("diverged", step=e.step, what=e.what, value=nonfinite_name(e.value), checkpoint=last)
    print(f"error: {e}; training stopped, nothing from that step on is saved; {kept}. "
          f"Try a lower learning_rate (now {lr:g}).", file=sys.stderr, flush=True)
    return contract.EXIT_DIVERGED


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
    from . import compile_cache, distributed

    trainer = None
    try:
        processes = distributed.initialize()  # before anything touches a device
        compile_cache.enable(run_dir, processes)  # before the first compile
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
    """`python -m gemma_ft_widgets.train RUN_DIR`: train in an existing run folder; returns the exit
    code (EXIT_CONFIG_ERROR for bad arguments)."""
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
