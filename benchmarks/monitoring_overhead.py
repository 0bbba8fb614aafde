"""2. Monitoring overhead: the trainer's tokens/s with two panels polling at 1 Hz and
`gemma-ft logs --follow` running, against no observer. Target >= 0.98.

One real run (RunManager.start: supervisor + trainer, the package's own launch path) trains
the tiny model on a tiny batch (where the loop is most sensitive to a stolen CPU) in a
temporary workspace. Two observer processes watch it:

  panels   a process holding two ControlPanel(workspace, poll=True, poll_interval=1.0), as a
           kernel with two panel cells would;
  follow   `python -m gemma_ft_widgets.cli logs --follow --workspace WS` (the `gemma-ft`
           console script's code), its output to a file.

Once the trainer logs steps, the observers get alternate turns of a few seconds: "observed"
(observers running) and "alone" (observers frozen with SIGSTOP). The trainer itself runs
throughout; its tokens/s per turn comes from its own step events (intervals holding a
checkpoint left out). Ratio = median observed / median alone. After a frozen turn a panel
catches up on the lines it missed in its first poll, as a panel does after a busy spell.

    python benchmarks/monitoring_overhead.py
    python benchmarks/monitoring_overhead.py --cycles 20
    python benchmarks/monitoring_overhead.py --smoke          # the simulated trainer, short
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TARGET = 0.98
SIM = "gemma_ft_widgets.runs.simulated_trainer"

PANELS = r"""
import json, signal, sys, threading
from gemma_ft_widgets import ControlPanel
panels = [ControlPanel(sys.argv[1], poll=True, poll_interval=1.0) for _ in range(2)]
for p in panels:
    p.wait_ready(120)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
print("ready", flush=True)
done.wait()
out = {"polls": [p.polls for p in panels], "poll_errors": [p.poll_errors for p in panels],
       "states": [p.state for p in panels], "points": [len(p.dashboard.loss_line.x) for p in panels]}
for p in panels:
    p.close()
print(json.dumps(out), flush=True)
"""


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its children (psutil)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return float("nan")


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--cycles", type=int, default=None, help="observed/alone turn pairs (default 16)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default 3)")
    p.add_argument("--trainer", choices=("real", "sim"), default=None,
                   help="the trainer (default real; --smoke: sim)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args(argv)
    cycles = args.cycles or args.rounds or (2 if args.smoke else 16)
    slice_s = args.slice or (1.2 if args.smoke else 3.0)
    trainer = args.trainer or ("sim" if args.smoke else "real")
    C.print_machine()

    from gemma_ft_widgets import contract
    from gemma_ft_widgets.runs import RunManager, State

    if trainer == "sim":
        os.environ["GEMMA_FT_SIM_STEP_TIME"] = "0.01"
    module = SIM if trainer == "sim" else contract.DEFAULT_TRAINER
    os.environ[contract.TRAINER_ENV] = module
    observers: dict[str, subprocess.Popen] = {}
    with C.TempDir("monitoring", args.keep) as root:
        ws = os.path.join(root, "ws")
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        manager = RunManager(ws, trainer=module)
        run = manager.start({"model": "tiny", "dataset": dataset, "batch_size": args.batch,
                             "max_seq_len": args.seq, "max_steps": 1_000_000, "warmup_steps": 0,
                             "eval_fraction": 0.0, "eval_every": 1_000_000, "checkpoint_every": 100,
                             "keep_checkpoints": 3, "log_every": 1, "lora_rank": 8})
        panels_out = os.path.join(root, "panels.out")
        follow_out = os.path.join(root, "follow.out")
        cpu = {}
        try:
            manager.wait(until=State.RUNNING, timeout=900, interval=0.2)
            with open(panels_out, "w") as f1, open(follow_out, "w") as f2:
                observers["panels"] = subprocess.Popen([C.PY, "-c", PANELS, ws], stdout=f1,
                                                       stderr=subprocess.STDOUT, env=C.env())
                observers["follow"] = subprocess.Popen(
                    [C.PY, "-m", "gemma_ft_widgets.cli", "logs", "--follow", "--workspace", ws],
                    stdout=f2, stderr=subprocess.STDOUT, env=C.env())
            C.wait_until(lambda: "ready" in open(panels_out).read(), 300, 0.1, "the panels' first poll")
            time.sleep(1.0)
            pids = [o.pid for o in observers.values()]

            def alive():
                for name, o in observers.items():
                    if o.poll() is not None:
                        raise RuntimeError(f"observer {name} exited with {o.returncode}")
                if manager.status().state not in (State.RUNNING,):
                    raise RuntimeError(f"the run is {manager.status().state.value}")

            cpu0 = {name: cpu_seconds(o.pid) for name, o in observers.items()}
            slices = C.alternate({"observed": lambda on: None,
                                  "alone": lambda on: (C.freeze if on else C.thaw)(pids)},
                                 slice_s, cycles, alive)
            cpu = {name: cpu_seconds(o.pid) - cpu0[name] for name, o in observers.items()}
        finally:
            for name, o in observers.items():
                C.thaw([o.pid])
                if o.poll() is None:
                    o.send_signal(signal.SIGTERM if name == "panels" else signal.SIGINT)
            for o in observers.values():
                try:
                    o.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    o.kill()
                    o.wait()
            report = manager.stop(timeout=60)
            if not report.nothing_to_stop and not report.group_gone:
                manager.stop(force=True)
        events = C.read_events(run.run_dir)
        panel_stats = [json.loads(x) for x in open(panels_out) if x.startswith("{")]
        follow_bytes = os.path.getsize(follow_out)

    tokens = args.batch * args.seq
    points, other = [], False
    for e in events:
        if e.get("event") == "step":
            points.append((e["time"], tokens, not other))
            other = False
        elif e.get("event") in ("checkpoint", "eval"):
            other = True
    on = C.sliced_rate(points, slices, "observed")
    off = C.sliced_rate(points, slices, "alone")
    ratio = on["median"] / off["median"]
    observed_s = sum(b - a for lab, a, b in slices if lab == "observed")
    C.table(["trainer", "tokens/s median of turns", "min–max", "pooled", "turns"], [
        ("alone (observers frozen)", off["median"], C.spread(off["per_turn"]), off["pooled"], off["turns"]),
        ("observed (2 panels @1 Hz + logs --follow)", on["median"], C.spread(on["per_turn"]), on["pooled"],
         on["turns"]),
    ], title=f"Monitoring overhead ({trainer} trainer, tiny batch {args.batch} x seq {args.seq}; "
             f"{cycles} cycles of {slice_s} s turns)")
    ps = panel_stats[-1] if panel_stats else {}
    print(f"observers' CPU during the observed turns: panels {C.fmt(cpu.get('panels'))} s, follow "
          f"{C.fmt(cpu.get('follow'))} s over {observed_s:.1f} s "
          f"({100 * sum(cpu.values()) / max(observed_s, 1e-9):.1f}% of one core); panel polls {ps.get('polls')}, "
          f"poll errors {ps.get('poll_errors')}, panel states {ps.get('states')}; follow printed {follow_bytes} bytes")
    if trainer == "sim":
        print("(simulated trainer: its steps are sleeps, so this run checks the mechanism only)")
    C.result("monitoring_overhead", ratio=ratio, target=TARGET,
             note=f"{trainer} trainer: observed / alone tokens/s")
    C.finish(args, {"observed": on, "alone": off, "observer_cpu_s": cpu, "panels": ps, "trainer": trainer})
    return 0


if __name__ == "__main__":
    sys.exit(main())
