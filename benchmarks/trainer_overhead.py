"""1. Trainer overhead: the real trainer's tokens/s against a bare jitted optax LoRA step.

Same model, LoRA init, optimizer, batch, sequence length, data and device. Two processes are
started, then given turns of a few seconds each, T B T B ..., the other one frozen (SIGSTOP)
meanwhile (see _common.py, "time-sliced alternation"), so both see the same machine load:

  T  the real trainer loop, `gemma_ft_widgets.train.loop.main(RUN_DIR)` (what `python -m
     gemma_ft_widgets.train RUN_DIR` runs): a metrics.jsonl event and TensorBoard scalars every
     step, checkpoints, signal handlers, all of it. Its tokens/s comes from its own step events.
  B  three plain loops on the trainer's model, LoRA init, optimizer and batches, interleaved
     chunk by chunk (each keeps its own params and optimizer state):
       bare          our minimal jitted optax LoRA step (logits -> masked cross-entropy -> the
                     trainer's optax chain, donated state): device_put the batch, call the
                     step, block only at the end of the chunk;
       trainer_step  the trainer's own compiled step (chunked CE, explicit shardings,
                     grad-norm metric) in the same loop;
       lag_sync      trainer_step plus reading step n-1's loss after queueing step n: the
                     host sync the trainer's loop does, without writing anything;
       full_ce       the trainer's step built with the model's own logits instead of its
                     chunked, rematerialised cross-entropy (step.make_steps(chunked=False)).

Tokens are counted like the trainer counts them (non-padding input tokens); the dataset has
no padding at all, so that count is batch x seq for every step (checked from the events).

Figures:
    per_step  the trainer's tokens/s over its step intervals, those holding a checkpoint event
              left out;
    wall      the trainer's tokens/s over every step interval of its turns, checkpoints saved
              at the default cadence (every 100 steps) included. Saves run in a background
              thread, so the loop is never paused for a whole save: what a save costs is the
              loop's slowdown while it runs, and only the wall clock sees all of it.
    checkpoint_s  how long a background save took, from the step event flushed before it to
              its checkpoint event (both inside one turn; the first save of the process, which
              also sets orbax up, left out): not a pause of the loop, for information.
Headline: wall / reference, target >= 0.95, where the reference is the fastest of the four bare
loops (measured in the same process, so their differences are the step functions' own). For reference, kauldron's kd.train.Trainer ran at about 0.11x a
bare step on a tiny batch here. The other ratios locate any difference:
trainer_step / bare = the step function (full_ce / trainer_step: of which the chunked loss),
lag_sync / trainer_step = the per-step host sync,
trainer per_step / lag_sync = the loop's Python work per step (events, TensorBoard, psutil),
wall / per_step = checkpoints.

    python benchmarks/trainer_overhead.py                  # tiny (a tiny batch) and d256
    python benchmarks/trainer_overhead.py --models d256 --cycles 12
    python benchmarks/trainer_overhead.py --profile        # + cProfile of the trainer loop
    python benchmarks/trainer_overhead.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TARGET = 0.95
CKPT_EVERY = 100  # TrainingConfig's default cadence
# Per model: batch, seq, bare-loop chunk (steps per timed chunk), turn length, cycles, and the
# checkpoint cadence of the measured run (the default one: `wall` is what a user gets).
SIZES = {
    "tiny": dict(batch=4, seq=64, chunk=10, slice_s=1.5, cycles=14, ckpt=CKPT_EVERY, profile_steps=1000),
    "d256": dict(batch=4, seq=64, chunk=1, slice_s=3.0, cycles=12, ckpt=CKPT_EVERY, profile_steps=60),
}
SMOKE_SIZES = {
    "tiny": dict(batch=2, seq=32, chunk=5, slice_s=0.4, cycles=2, ckpt=20, profile_steps=30),
    "d256": dict(batch=2, seq=32, chunk=1, slice_s=0.6, cycles=2, ckpt=5, profile_steps=10),
}
SKIP = 5  # step events left out after compile (first executions, allocator warm-up)
BARE_LABELS = ("bare", "trainer_step", "lag_sync", "full_ce")


# -- workers (each in its own process) -----------------------------------------------------------

def worker_trainer(run_dir: str, arch: str) -> int:
    """The real trainer's entry point (what `python -m gemma_ft_widgets.train RUN_DIR` runs),
    in a process where the benchmark's larger architecture is registered."""
    C.register_arch(arch)
    from gemma_ft_widgets.train import loop

    return loop.main([run_dir])


def build_bare(run_dir: str, arch: str):
    """(trainer after setup+compile, the minimal bare step jitted)."""
    C.register_arch(arch)
    import warnings

    import jax
    import jax.numpy as jnp
    import optax
    from gemma import peft

    from gemma_ft_widgets.train import loop

    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    tr = loop.Trainer(run_dir, log=lambda msg: None)
    tr.setup()  # the trainer's model, LoRA init, optimizer, data and shardings
    tr.compile()
    model, tx = tr.plan.model, tr.plan.tx

    def loss_fn(lora_params, frozen, batch):
        logits = model.apply({"params": peft.merge_params(frozen, lora_params)}, batch["input"]).logits
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["target"])
        return jnp.sum(ce * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1.0)

    def bare_step(lora_params, opt_state, frozen, batch):
        loss, grads = jax.value_and_grad(loss_fn)(lora_params, frozen, batch)
        updates, opt_state = tx.update(grads, opt_state, lora_params)
        return optax.apply_updates(lora_params, updates), opt_state, {"loss": loss}

    return tr, jax.jit(bare_step, donate_argnums=(0, 1))


def worker_bare(run_dir: str, arch: str, chunk: int, out: str) -> None:
    """Loop the three bare variants forever, interleaved chunk by chunk (each with its own
    params and optimizer state); after each chunk append {"v", "t0", "t1", "tokens"}."""
    import warnings

    import jax
    import jax.numpy as jnp

    from gemma_ft_widgets.train import data as tdata

    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    tr, bare = build_bare(run_dir, arch)
    host = [tr.batches.batch(i) for i in range(64)]
    tokens = [tdata.real_tokens(b) for b in host]
    from gemma_ft_widgets.train import sharding as tsharding
    from gemma_ft_widgets.train import step as tstep

    # The trainer's step with the model's own logits instead of the chunked cross-entropy.
    rep = tsharding.replicated(tr.mesh)
    shard = lambda tree: jax.tree.map(lambda x: x.sharding, tree)  # noqa: E731
    softcap = getattr(getattr(tr.loaded.model, "config", None), "final_logit_softcap", None)
    full_ce, _ = tstep.make_steps(tr.plan.model, tr.plan.tx, tr.is_lora, False, softcap,
                                  shardings=(shard(tr.trainable), shard(tr.opt_state), shard(tr.frozen),
                                             tr.b_sh, rep))
    variants = {  # name: (step, batch sharding, lagged loss read)
        "bare": (bare, None, False),
        "trainer_step": (tr.train_compiled, tr.b_sh, False),
        "lag_sync": (tr.train_compiled, tr.b_sh, True),
        "full_ce": (full_ce, tr.b_sh, False),
    }
    state = {v: (jax.tree.map(jnp.copy, tr.trainable), jax.tree.map(jnp.copy, tr.opt_state)) for v in variants}
    pos = {v: 0 for v in variants}

    def run(v, n):
        step, sharding, lag = variants[v]
        p, o = state[v]
        pending, m, count = None, None, 0
        for _ in range(n):
            b = pos[v] % len(host)
            p, o, m = step(p, o, tr.frozen, jax.device_put(host[b], sharding))
            if lag:
                if pending is not None:
                    float(jax.device_get(pending))
                pending = m["loss"]
            count += tokens[b]
            pos[v] += 1
        jax.block_until_ready((p, o, m))
        state[v] = (p, o)
        return count

    for v in variants:  # compile (bare) and warm up
        run(v, 3)
    f = open(out, "a", buffering=1, encoding="utf-8")
    order = list(variants)
    k = 0
    while True:
        v = order[k % len(order)]
        k += 1
        t0 = time.time()
        n = run(v, chunk)
        f.write(json.dumps({"v": v, "t0": t0, "t1": time.time(), "tokens": n, "steps": chunk}) + "\n")


PROFILE_PARTS = (  # (label, file suffix, function, cumulative): a per-step breakdown
    ("jitted step call (dispatch)", "jax/_src/stages.py", "__call__"),
    ("waiting for the device (loss read)", "jax/_src/api.py", "device_get"),
    ("emit(): step event, TensorBoard, psutil (incl. the wait)", "train/step_log.py", "_emit"),
    ("  metrics.jsonl append (Trainer.event)", "train/loop.py", "event"),
    ("  TensorBoard scalars", "train/tb.py", "scalars"),
    ("  host RSS (psutil)", "train/step_log.py", "rss"),
    ("  device_memory()", "train/step_log.py", "device_memory"),
    ("batch: Batches.batch", "train/data.py", "batch"),
    ("batch: jax.device_put", "jax/_src/api.py", "device_put"),
    ("real_tokens()", "train/data.py", "real_tokens"),
)  # (checkpoints: cProfile loses orbax's asyncio frames; their cost comes from the events)


def worker_profile(run_dir: str, arch: str, top: int = 25) -> None:
    """The real Trainer.train() under cProfile (setup and compile left out)."""
    import cProfile
    import pstats

    C.register_arch(arch)
    from gemma_ft_widgets.train import loop

    tr = loop.Trainer(run_dir, log=lambda msg: None)
    tr.event("start", attempt=1, resume_step=None, max_steps=tr.config.max_steps, pid=os.getpid())
    tr.setup()
    tr.compile()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    tr.train()
    prof.disable()
    seconds = time.perf_counter() - t0
    n = tr.config.max_steps
    print(f"profile of Trainer.train(): {n} steps in {seconds:.2f} s ({1e3 * seconds / n:.3f} ms/step, "
          f"profiler overhead included)")
    stats = pstats.Stats(prof)
    rows = []
    for label, suffix, func in PROFILE_PARTS:
        ct = sum(v[3] for (f, _, name), v in stats.stats.items() if f.endswith(suffix) and name == func)
        rows.append((label, 1e3 * ct / n, 100 * ct / seconds))
    C.table(["part of the loop (cumulative)", "ms per step", "% of the loop"], rows,
            title="Where Trainer.train() spends its time (cProfile)")
    stats.sort_stats("tottime").print_stats(top)
    micro(tr)


def micro(tr, n: int = 300, repeats: int = 5) -> None:
    """Cost per call of each piece of per-step host work the loop does, timed alone."""
    import tempfile

    import jax

    from gemma_ft_widgets.train import data as tdata
    from gemma_ft_widgets.train import loop
    from gemma_ft_widgets.train.tb import ScalarWriter

    scratch = tempfile.mkdtemp(prefix="gft-bench-micro-")
    tb = ScalarWriter(scratch)
    host = tr.batches.batch(0)
    ready = jax.device_put(1.0)
    fields = dict(step=1, loss=2.5, lr=1e-3, tokens_per_s=12345.6, step_time_s=0.004, elapsed_s=12.3,
                  device_mem_bytes=None, host_rss_bytes=123456789)
    pieces = {
        "Trainer.event('step', ...) (json + open/write/close)": lambda: tr.event("step", **fields),
        "TensorBoard scalars (3 values)": lambda: tb.scalars(1, {"loss": 2.5, "lr": 1e-3, "tokens_per_s": 1e4}),
        "host RSS (psutil memory_info)": tr.host_memory.rss,
        "device_memory(devices)": lambda: loop.device_memory(tr.devices),
        "Batches.batch(step)": lambda: tr.batches.batch(7),
        "jax.device_put(batch, sharding)": lambda: jax.block_until_ready(jax.device_put(host, tr.b_sh)),
        "data.real_tokens(batch)": lambda: tdata.real_tokens(host),
        "float(device_get(loss)) of a ready scalar": lambda: float(jax.device_get(ready)),
    }
    rows, total = [], 0.0
    for label, fn in pieces.items():
        best = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best.append((time.perf_counter() - t) / n)
        us = 1e6 * C.median(best)
        total += us
        rows.append((label, us))
    tb.close()
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    rows.append(("sum: host work per logged step", total))
    C.table(["per-step host work, timed alone", "µs per call (median)"], rows,
            title="Per-step host work of the loop (each piece timed alone)")


# -- the driver ----------------------------------------------------------------------------------

def config(run_dir: str, arch: str, size: dict, dataset: str, max_steps: int) -> None:
    C.write_config(run_dir, model=C.register_arch(arch) if arch != "tiny" else "tiny", dataset=dataset,
                   batch_size=size["batch"], max_seq_len=size["seq"], max_steps=max_steps,
                   warmup_steps=0, eval_fraction=0.0, eval_every=max_steps, checkpoint_every=size["ckpt"],
                   keep_checkpoints=3, log_every=1, lora_rank=8, method="lora", learning_rate=1e-3)


def bench(arch: str, size: dict, root: str) -> dict:
    dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
    run_dir = os.path.join(root, "trainer")
    bare_dir = os.path.join(root, "bare")
    bare_out = os.path.join(root, "bare.jsonl")
    config(run_dir, arch, size, dataset, max_steps=1_000_000)
    config(bare_dir, arch, size, dataset, max_steps=1000)
    specs = {
        # The trainer is stopped first, alone (its SIGINT path saves one more checkpoint).
        "trainer": {"cmd": [C.PY, __file__, "--worker", "trainer", "--run-dir", run_dir, "--arch", arch],
                    "ready": lambda: any(e.get("event") == "step" for e in C.read_events(run_dir)),
                    "stop": signal.SIGINT},
        "bare": {"cmd": [C.PY, __file__, "--worker", "bare", "--run-dir", bare_dir, "--arch", arch,
                         "--chunk", str(size["chunk"]), "--out", bare_out],
                 "ready": lambda: os.path.exists(bare_out) and os.path.getsize(bare_out) > 0},
    }
    slices = C.sliced_processes(specs, size["slice_s"], size["cycles"], root)
    logs = {k: os.path.join(root, f"{k}.log") for k in specs}

    tokens_per_step = size["batch"] * size["seq"]
    events = C.read_events(run_dir)
    points = C.step_points(events, tokens_per_step, SKIP)
    every_point = C.step_points(events, tokens_per_step, SKIP, every_interval=True)
    logged_tokens = [e["tokens_per_s"] * e["step_time_s"] for e in events if e.get("event") == "step"]
    rates = {"trainer": C.sliced_rate(points, slices, "trainer"),
             "trainer_wall": C.sliced_rate(every_point, slices, "trainer")}
    lines = [json.loads(x) for x in open(bare_out, encoding="utf-8") if x.strip()]
    for v in BARE_LABELS:
        mine = [x for x in lines if x["v"] == v]
        rates[v] = C.sliced_intervals([(x["t0"], x["t1"], x["tokens"]) for x in mine], slices, "bare")
        rates[v]["tokens_per_step"] = mine[-1]["tokens"] / mine[-1]["steps"] if mine else None
    # Save duration: from the step event flushed just before a save to the save's own event,
    # when both fall in one turn (the trainer's log times a save by its own clock, which runs
    # on while the process is frozen). The first save of a process also sets orbax up: apart.
    step_time = {e["step"]: e["time"] for e in events if e.get("event") == "step"}
    saves = [(e["step"], e["time"] - step_time[e["step"]]) for e in events
             if e.get("event") == "checkpoint" and e["step"] in step_time]
    clean = [(n, d) for n, d in saves
             if C.slice_of(step_time[n], slices, "trainer") is not None
             and C.slice_of(step_time[n], slices, "trainer") == C.slice_of(step_time[n] + d, slices, "trainer")]
    first = saves[0][0] if saves else None
    ckpts = [d for n, d in clean if n != first]
    logged = [float(x) for x in re.findall(r"checkpoint \S+ \(([\d.]+)s\)", open(logs["trainer"]).read())]
    ckpt_s = C.median(ckpts) if ckpts else C.median(logged[1:] or logged)
    first_ckpt = logged[0] if logged else None
    per_step = rates["trainer"]["median"]
    wall = rates["trainer_wall"]["median"]
    steps = [e for e in events if e.get("event") == "step"]
    compile_s = next((e.get("seconds") for e in events if e.get("event") == "compile"), None)
    return {"rates": rates, "per_step": per_step, "wall": wall, "checkpoint_s": ckpt_s,
            "first_checkpoint_s": first_ckpt, "checkpoints": len(ckpts),
            "compile_s": compile_s, "trainer_steps": len(steps),
            "step_time_s": tokens_per_step / per_step, "tokens_per_step": tokens_per_step,
            "tokens_logged": C.median(logged_tokens[SKIP:]) if len(logged_tokens) > SKIP else float("nan"),
            "slices": slices}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--models", default=None, help="comma list of: " + ", ".join(C.ARCHS)
                   + " (default tiny,d256; --smoke: tiny)")
    p.add_argument("--cycles", type=int, default=None, help="turns per process (default per model)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default per model)")
    p.add_argument("--profile", action="store_true",
                   help="also run one trainer under cProfile and print where its loop spends time")
    p.add_argument("--worker", choices=("trainer", "bare", "profile"), help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--arch", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "trainer":
        return worker_trainer(args.run_dir, args.arch)
    if args.worker == "bare":
        worker_bare(args.run_dir, args.arch, args.chunk, args.out)
        return 0
    if args.worker == "profile":
        worker_profile(args.run_dir, args.arch)
        return 0

    archs = [a for a in (args.models or ("tiny" if args.smoke else "tiny,d256")).split(",") if a]
    sizes = SMOKE_SIZES if args.smoke else SIZES
    C.print_machine()
    rows, figures = [], {}
    for arch in archs:
        size = dict(sizes[arch])
        if args.cycles or args.rounds:
            size["cycles"] = args.cycles or args.rounds
        if args.slice:
            size["slice_s"] = args.slice
        print(f"{arch}: batch {size['batch']} x seq {size['seq']}; trainer and bare processes in turns of "
              f"{size['slice_s']} s, {size['cycles']} cycles", flush=True)
        with C.TempDir(f"overhead-{arch}", args.keep) as root:
            m = bench(arch, size, root)
        figures[arch] = m
        r = m["rates"]
        if abs(m["tokens_logged"] - m["tokens_per_step"]) > 0.01 * m["tokens_per_step"] or any(
                r[v].get("tokens_per_step", m["tokens_per_step"]) != m["tokens_per_step"] for v in BARE_LABELS):
            print(f"WARNING: token counts differ: trainer logged {m['tokens_logged']:.1f}/step, bare "
                  f"{[r[v].get('tokens_per_step') for v in BARE_LABELS]}, expected {m['tokens_per_step']}")
        ref = max(r[v]["median"] for v in BARE_LABELS)
        m["reference"] = ref
        rows += [
            (arch, "bare: minimal jitted optax LoRA step", r["bare"]["median"], r["bare"]["median"] / ref,
             r["bare"]["turns"]),
            (arch, "trainer_step: trainer's step, plain loop", r["trainer_step"]["median"],
             r["trainer_step"]["median"] / ref, r["trainer_step"]["turns"]),
            (arch, "lag_sync: + host sync per step", r["lag_sync"]["median"], r["lag_sync"]["median"] / ref,
             r["lag_sync"]["turns"]),
            (arch, "full_ce: trainer's step, unchunked loss", r["full_ce"]["median"], r["full_ce"]["median"] / ref,
             r["full_ce"]["turns"]),
            (arch, "real trainer, per step", m["per_step"], m["per_step"] / ref, r["trainer"]["turns"]),
            (arch, f"real trainer, wall (ckpt every {size['ckpt']})", m["wall"], m["wall"] / ref,
             r["trainer_wall"]["turns"]),
        ]
        m["ckpt_every"] = size["ckpt"]
        print(f"{arch}: step {1e3 * m['step_time_s']:.2f} ms, background save {C.fmt(m['checkpoint_s'])} s "
              f"(median of {m['checkpoints']}; first {C.fmt(m['first_checkpoint_s'])} s), compile {C.fmt(m['compile_s'])} s, trainer ran "
              f"{m['trainer_steps']} steps", flush=True)
    print()
    C.table(["model", "loop", "tokens/s (median of turns)", "vs reference", "turns"], rows,
            title="Trainer overhead (reference = the fastest bare loop)")
    for arch in archs:
        m, r = figures[arch], figures[arch]["rates"]
        ref = m["reference"]
        C.result(f"trainer_overhead_{arch}", ratio=m["wall"] / ref, target=TARGET,
                 note=f"real trainer, wall clock incl. checkpoints every {m['ckpt_every']} / bare step")
        C.result(f"trainer_overhead_{arch}_per_step", ratio=m["per_step"] / ref, target=TARGET,
                 note="intervals holding a checkpoint event left out")
        C.result(f"trainer_step_vs_bare_{arch}", ratio=r["trainer_step"]["median"] / r["bare"]["median"],
                 note="the step function")
        C.result(f"chunked_loss_{arch}", ratio=r["trainer_step"]["median"] / r["full_ce"]["median"],
                 note="trainer's step with / without its chunked cross-entropy")
        C.result(f"host_sync_{arch}", ratio=r["lag_sync"]["median"] / r["trainer_step"]["median"],
                 note="lagged per-step loss read")
        C.result(f"loop_python_{arch}", ratio=m["per_step"] / r["lag_sync"]["median"],
                 note="events, TensorBoard, psutil per step")
    if args.profile:
        for arch in archs:
            size = sizes[arch]
            with C.TempDir(f"profile-{arch}", args.keep) as root:
                dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
                run_dir = os.path.join(root, "profiled")
                config(run_dir, arch, dict(size, ckpt=CKPT_EVERY), dataset, max_steps=size["profile_steps"])
                proc = subprocess.run([C.PY, __file__, "--worker", "profile", "--run-dir", run_dir, "--arch", arch],
                                      capture_output=True, text=True, env=C.env(), timeout=1800)
                print(proc.stdout[-12000:])
                if proc.returncode:
                    print(proc.stderr[-4000:])
    C.finish(args, {"figures": {a: {k: v for k, v in m.items() if k not in ("slices",)}
                                for a, m in figures.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
