"""The harness the observer-overhead benchmarks share (monitoring_overhead.py,
extension_polling.py): one real run, observers that take turns with being frozen, and the
trainer's tokens/s in each kind of turn.

One run (RunManager.start: supervisor + trainer, the package's own launch path) trains the tiny
model on a tiny batch, where the loop is most sensitive to a stolen CPU. Once it steps, the
script's observers start; then they get alternate turns of `slice_s` seconds, `cycles` times:
"observed" (running) and "alone" (frozen with SIGSTOP), the order rotated every cycle. The
trainer runs throughout; its tokens/s per turn comes from its own step events (intervals that
hold a checkpoint left out). The figure is the median over cycles of observed / alone, each
cycle's two turns side by side, so a load that drifts over the minutes cancels out of each
ratio; the quartiles of those ratios are its spread.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import _common as C

SIM = "gemma_ft_widgets.train.simulated"


def add_args(p, observed_help: str) -> None:
    p.add_argument("--cycles", type=int, default=None, help=f"{observed_help}/alone turn pairs (default 16)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default 3)")
    p.add_argument("--trainer", choices=("real", "sim"), default=None,
                   help="the trainer (default real; --smoke: sim)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its children (psutil)."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return float("nan")


def measure(args, tag: str, label: str,
            start_observers: Callable[[str, str], dict[str, tuple[subprocess.Popen, int]]],
            collect: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Run the benchmark: `start_observers(root, workspace)` starts them once the run steps and
    returns {name: (Popen, signal that ends it)}, ready to be measured; `collect(root)` reads
    what they wrote after they ended. Returns the rates, paired ratios, observers' CPU and
    what `collect` returned."""
    from gemma_ft_widgets import contract
    from gemma_ft_widgets.runs import RunManager, State

    cycles = args.cycles or args.rounds or (2 if args.smoke else 16)
    slice_s = args.slice or (1.2 if args.smoke else 3.0)
    trainer = args.trainer or ("sim" if args.smoke else "real")
    if trainer == "sim":
        os.environ["GEMMA_FT_SIM_STEP_TIME"] = "0.01"
    module = SIM if trainer == "sim" else contract.DEFAULT_TRAINER
    os.environ[contract.TRAINER_ENV] = module
    observers: dict[str, tuple[subprocess.Popen, int]] = {}
    with C.TempDir(tag, args.keep) as root:
        ws = os.path.join(root, "ws")
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        manager = RunManager(ws, trainer=module)
        run = manager.start({"model": "tiny", "dataset": dataset, "batch_size": args.batch,
                             "max_seq_len": args.seq, "max_steps": 1_000_000, "warmup_steps": 0,
                             "eval_fraction": 0.0, "eval_every": 1_000_000, "checkpoint_every": 100,
                             "keep_checkpoints": 3, "log_every": 1, "lora_rank": 8})
        cpu: dict[str, float] = {}
        try:
            manager.wait(until=State.RUNNING, timeout=900, interval=0.2)
            observers.update(start_observers(root, ws))
            pids = [o.pid for o, _ in observers.values()]

            def alive():
                for name, (o, _) in observers.items():
                    if o.poll() is not None:
                        raise RuntimeError(f"observer {name} exited with {o.returncode}")
                if manager.status().state is not State.RUNNING:
                    raise RuntimeError(f"the run is {manager.status().state.value}")

            cpu0 = {name: cpu_seconds(o.pid) for name, (o, _) in observers.items()}
            slices = C.alternate({label: lambda on: None,
                                  "alone": lambda on: (C.freeze if on else C.thaw)(pids)},
                                 slice_s, cycles, alive)
            cpu = {name: cpu_seconds(o.pid) - cpu0[name] for name, (o, _) in observers.items()}
        finally:
            for o, stop in observers.values():
                C.thaw([o.pid])
                if o.poll() is None:
                    o.send_signal(stop)
            for o, _ in observers.values():
                try:
                    o.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    o.kill()
                    o.wait()
            report = manager.stop(timeout=60)
            if not report.nothing_to_stop and not report.group_gone:
                manager.stop(force=True)
        events = C.read_events(run.run_dir)
        collected = collect(root)

    points = C.step_points(events, args.batch * args.seq, skip=0)
    on, off = C.sliced_rate(points, slices, label), C.sliced_rate(points, slices, "alone")
    pairs = C.paired_ratios(slices, on, off)
    return {"label": label, "trainer": trainer, "cycles": cycles, "slice_s": slice_s, "on": on, "off": off,
            "pairs": pairs, "ratio": C.median(pairs), "quartiles": C.quartiles(pairs),
            "ratio_of_medians": on["median"] / off["median"], "cpu_s": cpu,
            "observed_s": sum(b - a for lab, a, b in slices if lab == label), **collected}


def report(m: dict[str, Any], on_row: str, off_row: str, title: str) -> None:
    """The side-by-side table, the paired ratio with its spread, and the observers' CPU."""
    on, off = m["on"], m["off"]
    C.table(["trainer", "tokens/s median of turns", "min–max", "pooled", "turns"], [
        (off_row, off["median"], C.spread(off["per_turn"]), off["pooled"], off["turns"]),
        (on_row, on["median"], C.spread(on["per_turn"]), on["pooled"], on["turns"]),
    ], title=f"{title} ({m['trainer']} trainer; {m['cycles']} cycles of {m['slice_s']} s turns)")
    q1, q3 = m["quartiles"]
    print(f"{m['label']} / alone, paired by cycle: median {C.fmt(m['ratio'])} (quartiles {C.fmt(q1)}–{C.fmt(q3)}, "
          f"min–max {C.spread(m['pairs'])}, {len(m['pairs'])} pairs); ratio of the medians "
          f"{C.fmt(m['ratio_of_medians'])}")
    cpu = m["cpu_s"]
    print(f"observers' CPU during the {m['label']} turns: "
          + ", ".join(f"{k} {C.fmt(v)} s" for k, v in cpu.items())
          + f" over {m['observed_s']:.1f} s ({100 * sum(cpu.values()) / max(m['observed_s'], 1e-9):.1f}% of one core)")
    if m["trainer"] == "sim":
        print("(simulated trainer: its steps are sleeps, so this run checks the mechanism only)")


def wait_ready(path: str, timeout: float = 300) -> None:
    C.wait_until(lambda: "ready" in open(path).read(), timeout, 0.1, f"'ready' in {os.path.basename(path)}")
    time.sleep(1.0)

