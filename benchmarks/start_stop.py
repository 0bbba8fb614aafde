"""5. Start and stop latency, through RunManager with real processes and signals.

Per trial, in one temporary workspace:
  start -> STARTING   RunManager.start(config) called, then RunManager.status() polled every
                      5 ms until it says STARTING. Target <= 1 s.
  start -> first step status polled every 50 ms until RUNNING (a `step` event is logged). The
                      trainer's own events split it: process up (its `start` event), setup
                      (jax/gemma import, model, data: `data` event), compile (the `compile`
                      event's seconds), first step. Reported; no target.
  stop                after a few steps, either a graceful RunManager.stop() (SIGINT: the
                      trainer finishes its step, saves a checkpoint, exits ABORTED) or a forced
                      one (stop(force=True): SIGTERM then SIGKILL to the group), alternating
                      trial by trial; timed until it returns, and the supervisor and trainer
                      are then checked gone (or zombies) with psutil.
                      Graceful target <= one step + one checkpoint + 2 s, with the step time
                      (median step_time_s) and the checkpoint time (the trainer's own log line for
                      that save) of the same trial. Forced target <= 1 s.

Trainers: the real one (tiny model, tiny batch) and the simulated one (jax-free, 50 ms steps);
--smoke runs the simulated one only.

    python benchmarks/start_stop.py                   # 4 real trials + 6 simulated
    python benchmarks/start_stop.py --real-trials 6 --sim-trials 10
    python benchmarks/start_stop.py --smoke
"""

from __future__ import annotations

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

SIM = "gemma_ft_widgets.train.simulated"
STARTING_TARGET = 1.0
FORCED_TARGET = 1.0
GRACE_S = 2.0


def gone(pid: int | None) -> bool:
    import psutil

    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def trial(manager, cfg: dict, graceful: bool, steps_before_stop: int) -> dict:
    from gemma_ft_widgets import contract
    from gemma_ft_widgets.runs import State, lockfile

    out: dict = {"graceful": graceful}
    t0 = time.perf_counter()
    w0 = time.time()
    run = manager.start(cfg)
    out["start_call_s"] = time.perf_counter() - t0
    C.wait_until(lambda: manager.status().state in (State.STARTING, State.RUNNING), 30, 0.005, "STARTING")
    out["starting_s"] = time.perf_counter() - t0
    C.wait_until(lambda: manager.status().state == State.RUNNING, 900, 0.05, "the first step")
    out["first_step_s"] = time.perf_counter() - t0
    events = C.read_events(run.run_dir)
    first = {}
    for e in events:
        first.setdefault(e.get("event"), e)
    out["trainer_up_s"] = first["start"]["time"] - w0 if "start" in first else None
    out["setup_s"] = first["data"]["time"] - first["start"]["time"] if "data" in first and "start" in first else None
    out["compile_s"] = first.get("compile", {}).get("seconds")
    C.wait_until(lambda: (manager.status().step or 0) >= steps_before_stop, 300, 0.05, "some steps")
    lock = lockfile.read_lock(manager.workspace).data or {}
    pids = [lock.get("supervisor_pid"), lock.get("trainer_pid")]
    t1 = time.perf_counter()
    w1 = time.time()
    report = manager.stop(force=not graceful, timeout=60)
    out["stop_s"] = time.perf_counter() - t1
    out["group_gone"] = bool(report.group_gone) and all(gone(p) for p in pids)
    out["sent"] = list(report.sent)
    st = manager.wait(timeout=30)
    out["state"] = st.state.value
    events = C.read_events(run.run_dir)
    steps = [e for e in events if e.get("event") == "step"]
    out["step_time_s"] = C.median(e["step_time_s"] for e in steps[2:]) if len(steps) > 2 else None
    log = ""
    try:
        log = open(os.path.join(run.run_dir, contract.STDOUT_NAME)).read()
    except OSError:
        pass
    saves = re.findall(r"checkpoint \S+ \(([\d.]+)s\)", log)
    out["checkpoint_s"] = float(saves[-1]) if saves else None
    # Where a stop's time goes: the trainer's `final` event (step finished, checkpoint saved),
    # then the supervisor's result.json (the trainer process has exited), then stop() returns.
    final = [e for e in events if e.get("event") == "final"]
    out["to_final_s"] = final[-1]["time"] - w1 if final else None
    try:
        from gemma_ft_widgets.runs.status import parse_iso

        result = contract.read_json(os.path.join(run.run_dir, contract.RESULT_NAME))
        ended = parse_iso(result.get("ended_at"))
        out["to_result_s"] = ended - w1 if ended else None
    except (OSError, ValueError, ImportError):
        out["to_result_s"] = None
    return out


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--real-trials", type=int, default=None, help="real-trainer trials (default 4; --smoke 0)")
    p.add_argument("--sim-trials", type=int, default=None, help="simulated-trainer trials (default 6; --smoke 2)")
    args = p.parse_args(argv)
    real_n = args.real_trials if args.real_trials is not None else (0 if args.smoke else 4)
    sim_n = args.sim_trials if args.sim_trials is not None else (2 if args.smoke else 6)
    C.print_machine()

    from gemma_ft_widgets import contract
    from gemma_ft_widgets.runs import RunManager

    os.environ["GEMMA_FT_SIM_STEP_TIME"] = "0.05"
    results: dict[str, list[dict]] = {"real": [], "sim": []}
    with C.TempDir("startstop", args.keep) as root:
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        cfg = {"model": "tiny", "dataset": dataset, "batch_size": 4, "max_seq_len": 64, "max_steps": 100_000,
               "warmup_steps": 0, "eval_fraction": 0.0, "eval_every": 100_000, "checkpoint_every": 100_000,
               "log_every": 1, "lora_rank": 8}
        for kind, n, module, before in (("sim", sim_n, SIM, 5), ("real", real_n, contract.DEFAULT_TRAINER, 20)):
            if not n:
                continue
            os.environ[contract.TRAINER_ENV] = module
            manager = RunManager(os.path.join(root, f"ws-{kind}"), trainer=module)
            for i in range(n):
                r = trial(manager, cfg, graceful=(i % 2 == 0), steps_before_stop=before)
                results[kind].append(r)
                print(f"  [{kind} {i + 1}] start->STARTING {r['starting_s']:.3f} s (start() returned "
                      f"{r['start_call_s']:.3f} s), ->first step {r['first_step_s']:.2f} s (compile "
                      f"{C.fmt(r['compile_s'])} s); {'graceful' if r['graceful'] else 'forced'} stop "
                      f"{r['stop_s']:.3f} s, group gone {r['group_gone']}, {r['state']}, step "
                      f"{C.fmt(r['step_time_s'])} s, checkpoint {C.fmt(r['checkpoint_s'])} s, final event at "
                      f"{C.fmt(r['to_final_s'])} s, result at {C.fmt(r['to_result_s'])} s, sent {r['sent']}",
                      flush=True)

    rows = []
    summary = {}
    for kind, rs in results.items():
        if not rs:
            continue
        g = [r for r in rs if r["graceful"]]
        f = [r for r in rs if not r["graceful"]]
        bound = [r["step_time_s"] + (r["checkpoint_s"] or 0) + GRACE_S for r in g if r["step_time_s"] is not None]
        s = summary[kind] = {
            "starting": C.median(r["starting_s"] for r in rs),
            "first_step": C.median(r["first_step_s"] for r in rs),
            "trainer_up": C.median(r["trainer_up_s"] for r in rs),
            "setup": C.median(r["setup_s"] for r in rs),
            "compile": C.median(r["compile_s"] for r in rs),
            "graceful": C.median(r["stop_s"] for r in g) if g else None,
            "graceful_to_final": C.median(r["to_final_s"] for r in g) if g else None,
            "graceful_to_result": C.median(r["to_result_s"] for r in g) if g else None,
            "graceful_bound": C.median(bound) if bound else None,
            "graceful_excess": C.median(r["stop_s"] - b for r, b in zip(g, bound)) if bound else None,
            "forced": C.median(r["stop_s"] for r in f) if f else None,
            "all_gone": all(r["group_gone"] for r in rs),
        }
        rows += [
            (kind, "start -> STARTING visible", s["starting"], C.spread([r["starting_s"] for r in rs]), len(rs)),
            (kind, "start -> first step logged", s["first_step"], C.spread([r["first_step_s"] for r in rs]), len(rs)),
            (kind, "  of which: trainer process up", s["trainer_up"], "", ""),
            (kind, "  of which: setup (imports, model, data)", s["setup"], "", ""),
            (kind, "  of which: compile", s["compile"], "", ""),
            (kind, "graceful stop -> group gone", s["graceful"], C.spread([r["stop_s"] for r in g]), len(g)),
            (kind, "  trainer's final event (step + checkpoint done)", s["graceful_to_final"], "", ""),
            (kind, "  supervisor's result.json (trainer exited)", s["graceful_to_result"], "", ""),
            (kind, "  target: step + checkpoint + 2 s", s["graceful_bound"], "", ""),
            (kind, "forced stop -> group gone", s["forced"], C.spread([r["stop_s"] for r in f]), len(f)),
        ]
    C.table(["trainer", "latency", "median (s)", "min–max (s)", "trials"], rows,
            title="Start and stop latency")
    for kind, s in summary.items():
        C.result(f"start_to_starting_{kind}", value=s["starting"], unit="s", target=STARTING_TARGET, op="<=")
        C.result(f"start_to_first_step_{kind}", value=s["first_step"], unit="s",
                 note=f"compile {C.fmt(s['compile'])} s")
        if s["graceful"] is not None:
            C.result(f"graceful_stop_{kind}", value=s["graceful"], unit="s", target=s["graceful_bound"], op="<=",
                     note="target = step + checkpoint + 2 s")
        if s["forced"] is not None:
            C.result(f"forced_stop_{kind}", value=s["forced"], unit="s", target=FORCED_TARGET, op="<=")
        C.result(f"stop_group_gone_{kind}", value=int(not s["all_gone"]), unit="", target=0, op="<=",
                 note="processes left after a stop")
    C.finish(args, {"trials": results, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
