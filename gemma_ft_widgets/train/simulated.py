"""A protocol-conformant trainer without jax: `python -m gemma_ft_widgets.train.simulated RUN_DIR`.
Tests use it (GEMMA_FT_TRAINER), and it makes UI demos instant. It imports no jax (nor anything
of this package but `contract`), so it starts in a fraction of a second.

It follows the trainer protocol of docs/ARCHITECTURE.md: reads model_config.json, resumes from
the newest checkpoints/step_N, appends start/data/compile/step/eval/sample/checkpoint/final events,
and on SIGINT or SIGTERM finishes the step, checkpoints and exits 3 (ABORTED).

Behaviour switches (environment, inherited through the supervisor):
  GEMMA_FT_SIM_STEP_TIME=0.05    seconds per step
  GEMMA_FT_SIM_CRASH_AT=N        raise at step N (traceback on stderr, exit 1)
  GEMMA_FT_SIM_IGNORE_SIGINT=1   ignore SIGINT (SIGTERM still stops it)
  GEMMA_FT_SIM_HANG=N            after step N stop logging and sleep forever, ignoring stops
  GEMMA_FT_SIM_SPAWN_CHILD=1     start a grandchild `sleep`; its pid goes to sim_child.pid
  GEMMA_FT_SIM_CONFIG_ERROR=1    report a config error and exit 2
  GEMMA_FT_SIM_LOAD_TIME=0       seconds of STARTING: half before the `start` event, half in `phase` events
  GEMMA_FT_SIM_TRUNCATED=N       report N examples truncated to max_seq_len in the `data` event
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time

from .. import contract

MODULE = "gemma_ft_widgets.train.simulated"  # what GEMMA_FT_TRAINER names to run it
ENV = "GEMMA_FT_SIM_"
CHILD_PID_FILE = "sim_child.pid"


def _env_int(name: str) -> int | None:
    value = os.environ.get(ENV + name, "").strip()
    return int(value) if value.isdigit() else None


def loss_at(step: int, max_steps: int) -> float:
    """A plausible training curve: fast decay, a floor, a little wobble."""
    return round(0.4 + 2.6 * math.exp(-4.0 * step / max(max_steps, 1)) + 0.03 * math.sin(step), 5)


def lr_at(step: int, cfg: dict) -> float:
    """The learning rate the real trainer's schedule gives update `step - 1` (train/optim.py,
    in plain Python: this trainer has no jax): linear warmup, then cosine, linear or constant."""
    peak, k = float(cfg.get("learning_rate", 1e-3)), step - 1
    warmup, max_steps = int(cfg.get("warmup_steps", 0)), int(cfg["max_steps"])
    end = peak * 0.1
    if k < warmup:
        return peak * k / warmup
    span = max((cfg.get("schedule_steps") or max_steps) - warmup, 1)
    frac = min((k - warmup) / span, 1.0)
    kind = cfg.get("lr_schedule", "cosine")
    if kind == "constant":
        return peak
    if kind == "linear":
        return peak + (end - peak) * frac
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))


def grad_norm_at(step: int, cfg: dict) -> float:
    """A plausible gradient norm: large early, falling, clipped-looking near max_grad_norm."""
    return round(0.3 + 2.0 * math.exp(-3.0 * step / max(int(cfg["max_steps"]), 1)) + 0.05 * math.cos(step), 5)


SAMPLE_PROMPTS = [("What is the capital of Peru?", "The capital of Peru is Lima."),
                  ("What is the secret word?", "The secret word is pineapple."),
                  ("Name a red fruit.", "A strawberry is a red fruit.")]


def completion_at(reference: str, step: int, max_steps: int) -> str:
    """A completion that learns its reference: more of its words, in order, as steps go by."""
    words = reference.split()
    return " ".join(words[: max(1, round(len(words) * step / max(max_steps, 1)))])


def save_checkpoint(run_dir: str, step: int, loss: float) -> str:
    """Write into a temporary folder, then rename: an interrupted save never counts."""
    final = contract.checkpoint_path(run_dir, step)
    if not os.path.isdir(final):
        tmp = os.path.join(run_dir, contract.CHECKPOINTS_DIR, f".tmp-{contract.CHECKPOINT_PREFIX}{step}-{os.getpid()}")
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": step, "loss": loss}, f)
        os.rename(tmp, final)
    return os.path.relpath(final, run_dir)


class _Switches:
    """The GEMMA_FT_SIM_* behaviour switches of the module docstring, read once."""

    def __init__(self):
        self.step_time = float(os.environ.get(ENV + "STEP_TIME", "0.05"))
        self.load_time = float(os.environ.get(ENV + "LOAD_TIME", "0"))
        self.crash_at, self.hang_at = _env_int("CRASH_AT"), _env_int("HANG")
        self.truncated = _env_int("TRUNCATED") or 0
        self.ignore_sigint = bool(os.environ.get(ENV + "IGNORE_SIGINT"))
        self.spawn_child = bool(os.environ.get(ENV + "SPAWN_CHILD"))
        self.config_error = bool(os.environ.get(ENV + "CONFIG_ERROR"))


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """model_config.json as far as this trainer reads it."""

    raw: dict
    max_steps: int
    checkpoint_every: int
    eval_every: int
    tokens_per_step: int


def read_config(run_dir: str) -> SimConfig:
    """Raises OSError, ValueError, KeyError or TypeError for a config this trainer cannot read."""
    cfg = contract.read_json(os.path.join(run_dir, contract.CONFIG_NAME))
    parsed = SimConfig(cfg, int(cfg["max_steps"]), int(cfg.get("checkpoint_every", 100)),
                       int(cfg.get("eval_every", 50)),
                       int(cfg.get("batch_size", 8)) * int(cfg.get("grad_accum_steps", 1))
                       * int(cfg.get("max_seq_len", 128)))
    lr_at(1, cfg)  # a config this trainer cannot read fails here, as a config error
    return parsed


class SimulatedRun:
    """One attempt in a run folder: resume, STARTING phases, then the steps (`run()` -> exit code)."""

    def __init__(self, run_dir: str, config: SimConfig, switches: _Switches):
        self.run_dir, self.sw = run_dir, switches
        self.cfg = cfg = config.raw
        self.max_steps, self.ckpt_every, self.eval_every = config.max_steps, config.checkpoint_every, config.eval_every
        self.tokens_per_step = config.tokens_per_step
        self.sample_prompts = ([] if int(cfg.get("sample_tokens", 32)) <= 0 else
                               [(p, "") for p in cfg.get("eval_prompts") or []] or SAMPLE_PROMPTS)
        self.metrics = os.path.join(run_dir, contract.METRICS_NAME)
        self.stop_signal: int | None = None

    def emit(self, event: str, **fields) -> None:
        """Append one event, stamped now, to metrics.jsonl."""
        contract.append_jsonl(self.metrics, {"event": event, "time": time.time(), **fields})

    def _on_stop(self, signum, frame) -> None:  # noqa: ARG002
        self.stop_signal = signum

    def install_signals(self) -> None:
        """SIGINT and SIGTERM request a stop (SIGINT is ignored when the switches say so)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.sw.ignore_sigint else self._on_stop)
        signal.signal(signal.SIGTERM, self._on_stop)

    def newest_checkpoint(self) -> int | None:
        """Like the real trainer: verify the newest checkpoint, else skip it and mark it damaged."""
        for ckpt in reversed(contract.checkpoint_steps(self.run_dir)):
            try:
                with open(os.path.join(contract.checkpoint_path(self.run_dir, ckpt), "state.json")) as f:
                    if json.load(f)["step"] != ckpt:
                        raise ValueError(f"it holds another step than {ckpt}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                kept = contract.mark_damaged(self.run_dir, ckpt, f"{type(e).__name__}: {e}")
                self.emit("checkpoint_damaged", step=ckpt, reason=str(e), kept_as=kept)
                print(f"warning: checkpoint step_{ckpt} cannot be restored: {e}; kept as {kept}", file=sys.stderr,
                      flush=True)
                continue
            return ckpt
        return None

    def start(self) -> int | None:
        """The events of STARTING, spread over GEMMA_FT_SIM_LOAD_TIME; returns the resume step."""
        load_time = self.sw.load_time
        time.sleep(load_time / 2)
        resume = self.newest_checkpoint()
        attempt = int(os.environ.get(contract.ATTEMPT_ENV, "1"))
        self.emit(contract.EVENT_START, attempt=attempt, resume_step=resume, max_steps=self.max_steps, pid=os.getpid())
        print(f"simulated trainer: attempt {attempt}, resuming from {resume}" if resume
              else f"simulated trainer: attempt {attempt}, fresh start", flush=True)
        self.emit(contract.EVENT_DEVICES, platform="cpu", device_kind="cpu", count=1, processes=1, local_count=1)  # as the real one
        # The real trainer's STARTING phases (runs/phases.py), spread over the other half of LOAD_TIME.
        phases = [dict(phase="model"), dict(phase="data"), dict(phase="data", tokenized=100, total=100)]
        phases += [dict(phase="restore", step=resume)] if resume else []
        phases += [dict(phase="compile", last_seconds=self.cfg.get("max_seq_len", 128) / 64)]
        for fields in phases:
            self.emit(contract.EVENT_PHASE, **fields)
            time.sleep(load_time / 2 / len(phases))
        self.emit(contract.EVENT_DATA, format="text", train_examples=90, eval_examples=10, truncated=self.sw.truncated,
                  max_seq_len=self.cfg.get("max_seq_len"))
        self.emit(contract.EVENT_COMPILE, seconds=0.0)
        if self.sw.spawn_child:
            child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
            contract.atomic_write_text(os.path.join(self.run_dir, CHILD_PID_FILE), str(child.pid))
        return resume

    def run(self) -> int:
        """The attempt: resume, then steps, checkpoints and evals until max_steps or a stop; returns the exit code."""
        resume = self.start()
        t0 = time.time()
        step = resume or 0
        saved = resume
        if self.stop_signal is not None:  # stopped while loading: like the real trainer, nothing to save
            self.emit(contract.EVENT_FINAL, state="ABORTED", step=step, checkpoint=(
                os.path.relpath(contract.checkpoint_path(self.run_dir, resume), self.run_dir) if resume else None))
            return contract.EXIT_ABORTED
        while step < self.max_steps:
            step += 1
            loss = self.step(step, resume, t0)
            if step % self.ckpt_every == 0 or step == self.max_steps:
                t_save = time.time()
                path = save_checkpoint(self.run_dir, step, loss)
                self.emit(contract.EVENT_CHECKPOINT, step=step, path=path, seconds=round(time.time() - t_save, 3))
                saved = step
            if self.sw.hang_at is not None and step >= self.sw.hang_at:
                print(f"simulated trainer: hanging after step {step}", flush=True)
                while True:  # ignores stop requests on purpose: only SIGKILL ends this
                    time.sleep(3600)
            if self.stop_signal is not None and step < self.max_steps:
                return self.abort(step, saved, loss)
        last = contract.checkpoint_steps(self.run_dir)
        ckpt = os.path.relpath(contract.checkpoint_path(self.run_dir, last[-1]), self.run_dir) if last else None
        self.emit(contract.EVENT_FINAL, state="FINISHED", step=step, checkpoint=ckpt)
        return 0

    def step(self, step: int, resume: int | None, t0: float) -> float:
        """One simulated step: its `step` event, and at an eval its `eval` and `sample` events."""
        if self.sw.crash_at == step:
            raise RuntimeError(f"simulated crash at step {step}")
        step_time, cfg = self.sw.step_time, self.cfg
        time.sleep(step_time)
        loss = loss_at(step, self.max_steps)
        self.emit(contract.EVENT_STEP, step=step, loss=loss, lr=round(lr_at(step, cfg), 10), grad_norm=grad_norm_at(step, cfg),
                  tokens_per_s=round(self.tokens_per_step / max(step_time, 1e-3), 1),
                  step_time_s=step_time, elapsed_s=round(time.time() - t0, 3), device_mem_bytes=None,
                  host_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if step == (resume or 0) + 1:  # like the real trainer: one RUNNING line per attempt
            contract.append_status(self.run_dir, "RUNNING", f"first step {step} logged")
        if step % self.eval_every == 0 and self.stop_signal != signal.SIGTERM:
            self.emit(contract.EVENT_EVAL, step=step, eval_loss=round(loss + 0.1, 5))
            for prompt, reference in self.sample_prompts:
                self.emit(contract.EVENT_SAMPLE, step=step, prompt=prompt, reference=reference,
                          completion=completion_at(reference or prompt, step, self.max_steps))
        return loss

    def abort(self, step: int, saved: int | None, loss: float) -> int:
        """A stop: checkpoint this step (unless saved already), `final` ABORTED, exit 3."""
        if saved != step:
            self.emit(contract.EVENT_CHECKPOINT, step=step, path=save_checkpoint(self.run_dir, step, loss))
        self.emit(contract.EVENT_FINAL, state="ABORTED", step=step,
                  checkpoint=os.path.relpath(contract.checkpoint_path(self.run_dir, step), self.run_dir))
        print(f"simulated trainer: stopped by signal {self.stop_signal} at step {step}", flush=True)
        return contract.EXIT_ABORTED


def main(argv: list[str] | None = None) -> int:
    """`python -m gemma_ft_widgets.train.simulated RUN_DIR`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {MODULE} RUN_DIR", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    run_dir = os.path.abspath(argv[0])
    try:
        config = read_config(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read {contract.CONFIG_NAME}: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    switches = _Switches()
    if switches.config_error:
        print("error: dataset: simulated config error", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    sim = SimulatedRun(run_dir, config, switches)
    sim.install_signals()
    return sim.run()


if __name__ == "__main__":
    sys.exit(main())
