"""A protocol-conformant trainer without jax: `python -m gemma_ft_widgets.runs.simulated_trainer
RUN_DIR`. Tests use it (GEMMA_FT_TRAINER), and it makes UI demos instant.

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

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time

from .. import contract

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gemma_ft_widgets.runs.simulated_trainer RUN_DIR", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    run_dir = os.path.abspath(argv[0])
    try:
        cfg = contract.read_json(os.path.join(run_dir, contract.CONFIG_NAME))
        max_steps = int(cfg["max_steps"])
        ckpt_every = int(cfg.get("checkpoint_every", 100))
        eval_every = int(cfg.get("eval_every", 50))
        tokens_per_step = (int(cfg.get("batch_size", 8)) * int(cfg.get("grad_accum_steps", 1))
                           * int(cfg.get("max_seq_len", 128)))
        lr_at(1, cfg)  # a config this trainer cannot read fails here, as a config error
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read {contract.CONFIG_NAME}: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    if os.environ.get(ENV + "CONFIG_ERROR"):
        print("error: dataset: simulated config error", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR

    stop = {"signal": None}

    def on_stop(signum, frame):
        stop["signal"] = signum

    ignore_int = bool(os.environ.get(ENV + "IGNORE_SIGINT"))
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_int else on_stop)
    signal.signal(signal.SIGTERM, on_stop)

    sample_prompts = ([] if int(cfg.get("sample_tokens", 32)) <= 0 else
                      [(p, "") for p in cfg.get("eval_prompts") or []] or SAMPLE_PROMPTS)
    step_time = float(os.environ.get(ENV + "STEP_TIME", "0.05"))
    crash_at, hang_at = _env_int("CRASH_AT"), _env_int("HANG")
    metrics = os.path.join(run_dir, contract.METRICS_NAME)

    def emit(event: str, **fields) -> None:
        contract.append_jsonl(metrics, {"event": event, "time": time.time(), **fields})

    load_time = float(os.environ.get(ENV + "LOAD_TIME", "0"))
    time.sleep(load_time / 2)
    resume = None
    for ckpt in reversed(contract.checkpoint_steps(run_dir)):  # like the real one: verify, else skip and mark
        try:
            with open(os.path.join(contract.checkpoint_path(run_dir, ckpt), "state.json")) as f:
                if json.load(f)["step"] != ckpt:
                    raise ValueError(f"it holds another step than {ckpt}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            kept = contract.mark_damaged(run_dir, ckpt, f"{type(e).__name__}: {e}")
            contract.append_jsonl(os.path.join(run_dir, contract.METRICS_NAME), {
                "event": "checkpoint_damaged", "time": time.time(), "step": ckpt, "reason": str(e), "kept_as": kept})
            print(f"warning: checkpoint step_{ckpt} cannot be restored: {e}; kept as {kept}", file=sys.stderr,
                  flush=True)
            continue
        resume = ckpt
        break
    attempt = int(os.environ.get(contract.ATTEMPT_ENV, "1"))
    emit("start", attempt=attempt, resume_step=resume, max_steps=max_steps, pid=os.getpid())
    print(f"simulated trainer: attempt {attempt}, resuming from {resume}" if resume
          else f"simulated trainer: attempt {attempt}, fresh start", flush=True)
    emit("devices", platform="cpu", device_kind="cpu", count=1, processes=1, local_count=1)  # as the real one
    # The real trainer's STARTING phases (runs/phases.py), spread over the other half of LOAD_TIME.
    phases = [dict(phase="model"), dict(phase="data"), dict(phase="data", tokenized=100, total=100)]
    phases += [dict(phase="restore", step=resume)] if resume else []
    phases += [dict(phase="compile", last_seconds=cfg.get("max_seq_len", 128) / 64)]
    for fields in phases:
        emit(contract.EVENT_PHASE, **fields)
        time.sleep(load_time / 2 / len(phases))
    emit("data", format="text", train_examples=90, eval_examples=10, truncated=_env_int("TRUNCATED") or 0,
         max_seq_len=cfg.get("max_seq_len"))
    emit("compile", seconds=0.0)
    if os.environ.get(ENV + "SPAWN_CHILD"):
        child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
        contract.atomic_write_text(os.path.join(run_dir, CHILD_PID_FILE), str(child.pid))

    t0 = time.time()
    step = resume or 0
    saved = resume
    if stop["signal"] is not None:  # stopped while loading: like the real trainer, nothing to save
        emit("final", state="ABORTED", step=step, checkpoint=(
            os.path.relpath(contract.checkpoint_path(run_dir, resume), run_dir) if resume else None))
        return contract.EXIT_ABORTED
    while step < max_steps:
        step += 1
        if crash_at == step:
            raise RuntimeError(f"simulated crash at step {step}")
        time.sleep(step_time)
        loss = loss_at(step, max_steps)
        emit("step", step=step, loss=loss, lr=round(lr_at(step, cfg), 10), grad_norm=grad_norm_at(step, cfg),
             tokens_per_s=round(tokens_per_step / max(step_time, 1e-3), 1),
             step_time_s=step_time, elapsed_s=round(time.time() - t0, 3), device_mem_bytes=None,
             host_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if step == (resume or 0) + 1:  # like the real trainer: one RUNNING line per attempt
            contract.append_status(run_dir, "RUNNING", f"first step {step} logged")
        if step % eval_every == 0 and stop["signal"] != signal.SIGTERM:
            emit("eval", step=step, eval_loss=round(loss + 0.1, 5))
            for prompt, reference in sample_prompts:
                emit(contract.EVENT_SAMPLE, step=step, prompt=prompt, reference=reference,
                     completion=completion_at(reference or prompt, step, max_steps))
        if step % ckpt_every == 0 or step == max_steps:
            t_save = time.time()
            path = save_checkpoint(run_dir, step, loss)
            emit("checkpoint", step=step, path=path, seconds=round(time.time() - t_save, 3))
            saved = step
        if hang_at is not None and step >= hang_at:
            print(f"simulated trainer: hanging after step {step}", flush=True)
            while True:  # ignores stop requests on purpose: only SIGKILL ends this
                time.sleep(3600)
        if stop["signal"] is not None and step < max_steps:
            if saved != step:
                emit("checkpoint", step=step, path=save_checkpoint(run_dir, step, loss))
            emit("final", state="ABORTED", step=step, checkpoint=os.path.relpath(contract.checkpoint_path(run_dir, step), run_dir))
            print(f"simulated trainer: stopped by signal {stop['signal']} at step {step}", flush=True)
            return contract.EXIT_ABORTED
    last = contract.checkpoint_steps(run_dir)
    ckpt = os.path.relpath(contract.checkpoint_path(run_dir, last[-1]), run_dir) if last else None
    emit("final", state="FINISHED", step=step, checkpoint=ckpt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
