"""Samples during training: what the greedy samples at each eval cost, at the default cadence.

Two configurations of the real trainer (`python -m gemma_ft_widgets.train RUN_DIR`, one
process per run), alternated in one run, S N S N ...:

  S  the defaults: eval every 50 steps, 3 eval-split prompts, sample_tokens 32, 300 steps;
  N  the same with sample_tokens 0 (no samples).

The sample dataset (prompt/response), the form's defaults otherwise (tiny, LoRA, batch 8,
seq 128). From S's own events: each eval's sampling time is from its `eval` event to its first
`sample` event (the samples are written together once generated); the first eval's includes
building and compiling the sampler (once per run). Training time is the loop's time from the
`compile` event to `final`, less the sampling.

For LoRA the sampler is built and compiled in a thread while the train step compiles
(train/eval_samples.py warm_up), so the first eval's sampling no longer includes the compile; what
the warm-up costs shows in the whole-process ratio, the honest total.

Two regimes, since a workspace keeps JAX's compilation cache (train/compile_cache.py):
  cold  the cache off (GEMMA_FT_COMPILE_CACHE=0, the default): every process compiles, as the
        first run of a workspace does; the figures without a suffix;
  warm  one workspace whose cache a first S and a first N (not counted) filled: every later run
        with the same shapes, a resume, a re-run; the figures with `_warm`.

Figures (per model):
    eval_samples_run_<m>          the whole trainer process (start-up included) with samples /
                                  without, side by side, target <= 1.05
    eval_samples_share_<m>        all sampling at the evals / training time, target <= 0.05
    eval_samples_steady_share_<m> the same without the one-off compile (the cost per eval from
                                  the second on, times the evals), for information
    eval_samples_wall_<m>         S's loop time / N's loop time (medians), side by side

    python benchmarks/eval_samples.py                      # tiny, 2 rounds
    python benchmarks/eval_samples.py --models tiny d256   # + a heavier step (d=256, vocab 4096)
    python benchmarks/eval_samples.py --smoke
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import _common as c

WORKER = ("import sys; sys.path.insert(0, {bench!r}); import _common; _common.register_arch({arch!r}); "
          "from gemma_ft_widgets.train import loop; sys.exit(loop.main([{run_dir!r}]))")


def run_once(root: str, label: str, arch: str, cfg: dict, timeout: float, cache: bool) -> dict:
    run_dir = os.path.join(root, label)
    model = arch if arch == "tiny" else c.ARCHS[arch]["name"]
    c.write_config(run_dir, model=model, **cfg)
    code = WORKER.format(bench=str(c.BENCH_DIR), arch=arch, run_dir=run_dir)
    t0 = time.monotonic()
    env = c.env(GEMMA_FT_COMPILE_CACHE="1" if cache else "0", JAX_COMPILATION_CACHE_DIR=None)
    proc = subprocess.run([c.PY, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    run_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"trainer {label} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    events = c.read_events(run_dir)
    compiled = next(e for e in events if e["event"] == "compile")
    final = next(e for e in events if e["event"] == "final")
    per_eval = []
    for e in events:
        if e["event"] == "eval":
            first = next((s for s in events if s["event"] == "sample" and s["step"] == e["step"]), None)
            if first is not None:
                per_eval.append(first["time"] - e["time"])
    loop_s = final["time"] - compiled["time"]
    return {"loop_s": loop_s, "sampling_s": per_eval, "train_s": loop_s - sum(per_eval), "run_s": run_s}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--models", nargs="+", default=["tiny"], choices=sorted(c.ARCHS))
    args = p.parse_args()
    rounds = args.rounds or (1 if args.smoke else 2)
    steps, every = (10, 5) if args.smoke else (300, 50)
    root = tempfile.mkdtemp(prefix="bench-eval-samples-")
    from gemma_ft_widgets.config import sample_dataset_path

    c.print_machine()
    base = {"dataset": sample_dataset_path(), "max_steps": steps, "eval_every": every, "allow_cpu": True,
            "checkpoint_every": steps}
    configs = (("S", {}), ("N", {"sample_tokens": 0}))
    for arch in args.models:
        for regime in ("cold", "warm"):
            cache = regime == "warm"
            folder = os.path.join(root, f"{arch}-{regime}")  # a workspace: .jax_cache sits in it
            if cache and not args.smoke:  # fill the cache with both configurations' programs (not counted)
                for label, extra in configs:
                    run_once(folder, f"{label}-fill", arch, {**base, **extra}, timeout=1800, cache=True)
            runs = {"S": [], "N": []}
            for r in range(rounds):
                for label, extra in configs:
                    runs[label].append(run_once(folder, f"{label}{r}", arch, {**base, **extra}, timeout=1800,
                                                cache=cache))
            report(arch + ("_warm" if cache else ""), runs, steps, every, regime)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept {root}")
    c.finish(args)


def report(name: str, runs: dict, steps: int, every: int, regime: str) -> None:
    """The table of one model and regime, and its RESULT lines (named `..._<name>`)."""
    s = runs["S"]
    share = c.median(sum(x["sampling_s"]) / x["train_s"] for x in s)
    steady = c.median(c.median(x["sampling_s"][1:] or x["sampling_s"]) * len(x["sampling_s"]) / x["train_s"]
                      for x in s)
    wall = c.median(x["loop_s"] for x in s) / c.median(x["loop_s"] for x in runs["N"])
    whole = c.median(x["run_s"] for x in s) / c.median(x["run_s"] for x in runs["N"])
    rows = [[label, r, c.fmt(x["run_s"]), c.fmt(x["loop_s"]), c.fmt(x["train_s"]), len(x["sampling_s"]),
             c.fmt(x["sampling_s"][0] if x["sampling_s"] else None),
             c.fmt(c.median(x["sampling_s"][1:]) if len(x["sampling_s"]) > 1 else None)]
            for label in ("S", "N") for r, x in enumerate(runs[label])]
    c.table(["run", "round", "process s", "loop s", "train s", "evals sampled", "1st sampling s", "later, median s"],
            rows, title=f"{name} ({regime} compilation cache): {steps} steps, eval every {every}, "
                        "3 prompts x 32 tokens")
    c.result(f"eval_samples_share_{name}", ratio=share, target=0.05, op="<=",
             note=f"all sampling incl. the sampler's compile / training time ({regime} cache)")
    c.result(f"eval_samples_steady_share_{name}", ratio=steady, note="without the one-off compile")
    c.result(f"eval_samples_wall_{name}", ratio=wall, note="loop time with samples / without, side by side")
    c.result(f"eval_samples_run_{name}", ratio=whole, target=1.05, op="<=",
             note=f"whole trainer process (start-up, warm-up and evals) with samples / without ({regime} cache)")


if __name__ == "__main__":
    sys.exit(main())
