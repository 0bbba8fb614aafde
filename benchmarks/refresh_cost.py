"""3. Refresh cost: a panel refresh against a 1M-line history vs a 1k-line one, the first
attach to the 1M-line history, and a refresh of a workspace with 1,000 runs vs one with 10.

Two workspaces, each with one finished run (result.json, no lock) whose metrics.jsonl holds
start / data / compile events, then N step events (an eval every 50 steps, a checkpoint event
every 100), N = 1,000 and 1,000,000 (--smoke: 1,000 and 20,000).

* First attach: `ControlPanel(workspace, poll=False)` (its constructor polls once, reading the
  whole history, as a re-run cell or a new kernel does), timed for both sizes, target <= 2 s for
  the big one, with the plot decimated (the loss line must hold at most ~2 x MAX_POINTS points).
  A breakdown says where the time goes: RunManager.status (the summary's pass over the file),
  RunSeries.read (the bulk parse into columns, what the panel reads with), the decimation, and
  by difference the rest of the panel.
* Refresh: append one step line to each run's metrics.jsonl, then time `panel.refresh()`, the
  two panels alternated (small, big, big, small, ...). Checked: the new step is the last point
  of the drawn loss line. Target: median big / median small <= 2.

* Many runs: two workspaces of finished runs (200 step lines each), 10 and 1,000 runs
  (--smoke: 10 and 200). `panel.refresh()` timed, alternated; target: median 1,000 / median 10
  <= 2 (ended runs are cached by their result file's identity and the folder listing by the
  workspace folder's, so a poll does not re-read them). `RunManager.runs()` alone is timed too.
  The run table (ui/run_table.py) on the same workspaces: its first build, a sort click, a
  filter, and a panel refresh while one run has not ended (its status is new at every poll,
  so the table rebuilds its row): target median 1,000 / median 10 <= 2.

No jax anywhere. Memory: attaching to 1M lines parses the file in blocks into numpy columns;
no per-line dicts are kept.

    python benchmarks/refresh_cost.py
    python benchmarks/refresh_cost.py --lines 200000 --rounds 50
    python benchmarks/refresh_cost.py --smoke
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

RATIO_TARGET = 2.0
ATTACH_TARGET_S = 2.0
RUN_NAME = "tiny-20260101-000000"

STEP_LINE = ('{{"event":"step","time":{t:.3f},"step":{s},"loss":{loss:.5f},"lr":0.0003,'
             '"tokens_per_s":{tps:.1f},"step_time_s":0.0123,"elapsed_s":{e:.3f},'
             '"device_mem_bytes":null,"host_rss_bytes":812345678}}\n')


def step_line(step: int, t0: float = 1.7e9) -> str:
    return STEP_LINE.format(t=t0 + 0.0123 * step, s=step, loss=0.5 + 2.0 / (1 + step / 1000) + 0.01 * (step % 7),
                            tps=20000.0 + (step % 13), e=0.0123 * step)


def make_run(workspace: str, lines: int, name: str = RUN_NAME) -> str:
    """A finished run with `lines` step events; returns its folder."""
    run_dir = os.path.join(workspace, name)
    os.makedirs(os.path.join(run_dir, "checkpoints", f"step_{lines}"), exist_ok=True)
    cfg = {"model": "tiny", "dataset": "/nonexistent/data.jsonl", "dataset_format": "auto", "method": "lora",
           "lora_rank": 8, "learning_rate": 3e-3, "warmup_steps": 10, "batch_size": 8, "max_seq_len": 128,
           "max_steps": lines, "eval_fraction": 0.1, "eval_every": 50, "checkpoint_every": 100,
           "keep_checkpoints": 3, "log_every": 1, "seed": 0, "fsdp": False, "dtype": "auto"}
    with open(os.path.join(run_dir, "model_config.json"), "w") as f:
        json.dump(cfg, f)
    t0 = 1.7e9
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"event": "start", "time": t0 - 5, "attempt": 1, "resume_step": None,
                            "max_steps": lines, "pid": 1234}) + "\n")
        f.write(json.dumps({"event": "data", "time": t0 - 4, "format": "text", "train_examples": 900,
                            "eval_examples": 100, "truncated": 0}) + "\n")
        f.write(json.dumps({"event": "compile", "time": t0 - 1, "seconds": 3.0}) + "\n")
        buf = []
        for s in range(1, lines + 1):
            buf.append(step_line(s, t0))
            if s % 50 == 0:
                buf.append(f'{{"event":"eval","time":{t0 + 0.0123 * s:.3f},"step":{s},"eval_loss":0.9}}\n')
            if s % 100 == 0:
                buf.append(f'{{"event":"checkpoint","time":{t0 + 0.0123 * s:.3f},"step":{s},'
                           f'"path":"checkpoints/step_{s}"}}\n')
            if len(buf) >= 100_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
        f.write(json.dumps({"event": "final", "time": t0 + 0.0123 * lines + 1, "state": "FINISHED",
                            "step": lines, "checkpoint": f"checkpoints/step_{lines}"}) + "\n")
    with open(os.path.join(run_dir, "status.log"), "w") as f:
        f.write("2026-01-01T00:00:00.000000Z STARTING launching the supervisor\n"
                "2026-01-01T00:00:05.000000Z RUNNING first step\n"
                "2026-01-01T03:25:00.000000Z FINISHED finished\n")
    for name in ("trainer_stdout.log", "trainer_stderr.log", "supervisor.log"):
        with open(os.path.join(run_dir, name), "w") as f:
            f.write("log line\n" * 50)
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        json.dump({"state": "FINISHED", "exit_code": 0, "signal": None, "signal_name": None, "reason": "finished",
                   "final_step": lines, "last_checkpoint": f"checkpoints/step_{lines}",
                   "started_at": "2026-01-01T00:00:00.000000Z", "ended_at": "2026-01-01T03:25:00.000000Z",
                   "attempt": 1, "trainer_pid": 1235}, f)
    return run_dir


def breakdown(workspace: str, run_dir: str) -> dict[str, float]:
    """Where a first attach spends its time: the parts of the panel's own path, each on a
    fresh reader (RunManager.status's summary pass; RunSeries.read, the bulk parse of the whole
    file into columns; the decimation of the loss line). The rest is the panel's widgets."""
    from gemma_ft_widgets.runs import RunManager
    from gemma_ft_widgets.ui import plots
    from gemma_ft_widgets.ui.series import RunSeries

    out = {}
    t = time.perf_counter()
    RunManager(workspace).status()
    out["status (summary pass)"] = time.perf_counter() - t
    series = RunSeries(run_dir)
    t = time.perf_counter()
    series.read()
    out["RunSeries.read (bulk parse into columns)"] = time.perf_counter() - t
    t = time.perf_counter()
    plots.decimate(series.step.values, series.loss.values)
    out["decimate"] = time.perf_counter() - t
    del series
    gc.collect()
    return out


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--lines", type=int, default=None, help="step lines of the big history (default 1,000,000)")
    p.add_argument("--small", type=int, default=1000, help="step lines of the small history")
    args = p.parse_args(argv)
    big_n = args.lines or (20_000 if args.smoke else 1_000_000)
    small_n = args.small
    rounds = args.rounds or (5 if args.smoke else 40)
    C.print_machine()

    import ipywidgets  # noqa: F401  (imports are benchmark 4's business, not this one's)

    from gemma_ft_widgets.ui import ControlPanel, plots

    with C.TempDir("refresh", args.keep) as root:
        ws = {"small": os.path.join(root, "ws-small"), "big": os.path.join(root, "ws-big")}
        sizes = {"small": small_n, "big": big_n}
        runs = {}
        for k in ws:
            t = time.perf_counter()
            runs[k] = make_run(ws[k], sizes[k])
            mb = os.path.getsize(os.path.join(runs[k], "metrics.jsonl")) / 1e6
            print(f"{k}: {sizes[k]:,} step lines, metrics.jsonl {mb:,.1f} MB (written in "
                  f"{time.perf_counter() - t:.1f} s)", flush=True)

        # First attach, the small one first (it also warms up what the first panel of a process
        # builds once), then the big one.
        panels, attach = {}, {}
        for k in ("small", "big"):
            gc.collect()
            t = time.perf_counter()
            panels[k] = ControlPanel(ws[k], poll=False)
            attach[k] = time.perf_counter() - t
            n_drawn = len(panels[k].dashboard.loss_line.x)
            print(f"first attach to {sizes[k]:,} lines: {attach[k]:.3f} s; state {panels[k].state}, "
                  f"view {panels[k].view}, loss line {n_drawn:,} points drawn", flush=True)
        drawn_big = len(panels["big"].dashboard.loss_line.x)
        decimated = drawn_big <= 2 * plots.MAX_POINTS + 2

        # Steady-state refresh, alternated.
        times = {"small": [], "big": []}
        next_step = {k: sizes[k] + 1 for k in ws}
        shown_ok = True
        for r in range(rounds):
            for k in (("small", "big") if r % 2 == 0 else ("big", "small")):
                with open(os.path.join(runs[k], "metrics.jsonl"), "a") as f:
                    f.write(step_line(next_step[k]))
                t = time.perf_counter()
                panels[k].refresh()
                times[k].append(time.perf_counter() - t)
                last = panels[k].dashboard.loss_line.x
                shown_ok &= bool(len(last)) and int(last[-1]) == next_step[k]
                next_step[k] += 1
        for panel in panels.values():
            panel.close()
        del panels
        gc.collect()
        parts = breakdown(ws["big"], runs["big"])

    med = {k: C.median(v) for k, v in times.items()}
    ratio = med["big"] / med["small"]
    C.table(["history", "first attach (s)", "refresh median (ms)", "refresh min–max (ms)"],
            [(f"{sizes[k]:,} lines", attach[k], 1e3 * med[k], C.spread([1e3 * x for x in times[k]]))
             for k in ("small", "big")],
            title=f"Panel refresh after one appended step ({rounds} rounds, alternated)")
    C.table(["part of a first attach", "seconds"], list(parts.items()),
            title=f"Breakdown for {big_n:,} lines (each part on its own)")
    print(f"decimated: loss line {drawn_big:,} points for {big_n:,} steps (MAX_POINTS {plots.MAX_POINTS}); "
          f"new point on screen after each refresh: {shown_ok}")
    if not shown_ok:
        print("WARNING: a refresh did not put the appended step on screen")
    C.result("refresh_big_vs_small", ratio=ratio, target=RATIO_TARGET, op="<=",
             note=f"{big_n:,} vs {small_n:,} lines")
    many = many_runs(10, 200 if args.smoke else 1000, rounds, args.keep)
    C.result("refresh_many_vs_few_runs", ratio=many["ratio"], target=RATIO_TARGET, op="<=",
             note=f"{many['counts'][1]:,} vs {many['counts'][0]:,} finished runs")
    C.result("refresh_many_vs_few_runs_one_open", ratio=many["open_ratio"], target=RATIO_TARGET, op="<=",
             note=f"{many['counts'][1]:,} vs {many['counts'][0]:,} runs, one not ended (the run table re-sorts)")
    C.result("first_attach_big", value=attach["big"], unit="s", target=ATTACH_TARGET_S, op="<=",
             note=f"{big_n:,} lines, decimated={decimated}")
    C.result("first_attach_decimated", value=drawn_big, unit="pts", target=2 * plots.MAX_POINTS + 2, op="<=")
    C.finish(args, {"attach_s": attach, "refresh_s": times, "breakdown_s": parts, "lines": sizes,
                    "many_runs": many})
    return 0


def many_runs(few: int, many: int, rounds: int, keep: bool) -> dict:
    """Panel refresh and RunManager.runs() with `few` vs `many` finished runs in the workspace."""
    import shutil

    from gemma_ft_widgets.runs import RunManager
    from gemma_ft_widgets.ui import ControlPanel

    counts = (few, many)
    with C.TempDir("refresh-runs", keep) as root:
        panels, managers = {}, {}
        for n in counts:
            ws = os.path.join(root, f"ws-{n}")
            first = make_run(ws, 200, "tiny-20260101-000000-1")
            for i in range(2, n + 1):
                shutil.copytree(first, os.path.join(ws, f"tiny-20260101-000000-{i}"))
            panels[n], managers[n] = ControlPanel(ws, poll=False), RunManager(ws)
            managers[n].runs()
        times = {n: [] for n in counts}
        list_times = {n: [] for n in counts}
        for r in range(max(rounds, 20)):
            for n in (counts if r % 2 == 0 else counts[::-1]):
                t = time.perf_counter()
                panels[n].refresh()
                times[n].append(time.perf_counter() - t)
                t = time.perf_counter()
                listed = managers[n].runs()
                list_times[n].append(time.perf_counter() - t)
                assert len(listed) == n
        table = run_table_costs(panels, counts, max(rounds, 20))
        for panel in panels.values():
            panel.close()
    med = {n: C.median(v) for n, v in times.items()}
    lmed = {n: C.median(v) for n, v in list_times.items()}
    C.table(["finished runs", "panel refresh median (ms)", "min–max (ms)", "RunManager.runs() median (ms)"],
            [(f"{n:,}", 1e3 * med[n], C.spread([1e3 * x for x in times[n]]), 1e3 * lmed[n]) for n in counts],
            title=f"Panel refresh with many runs in the workspace ({max(rounds, 20)} rounds, alternated)")
    return {"counts": counts, "refresh_s": times, "runs_s": list_times, "ratio": med[many] / med[few], **table}


def run_table_costs(panels: dict, counts: tuple, rounds: int) -> dict:
    """The run table (ui/run_table.py) with `counts` runs: its first build (every row read
    from its run folder: status.log, note, config, best eval), a panel refresh while one run
    has not ended (its status is new at each poll, so the table re-sorts and re-filters its
    rows: the cost a live run adds), and a click on a column header (sort) and a filter."""
    from gemma_ft_widgets.ui import ControlPanel
    from gemma_ft_widgets.ui.run_table_model import RunTableModel

    build, open_refresh, sort, filt = ({n: [] for n in counts} for _ in range(4))
    for n in counts:
        statuses = panels[n].manager.runs()
        for _ in range(3):
            t = time.perf_counter()
            RunTableModel().set_runs(statuses)
            build[n].append(time.perf_counter() - t)
        # One run whose result.json is gone: not ended, so its status is computed at each poll
        # (a new panel: the old one's manager has it cached as ended).
        open_dir = statuses[-1].run_dir
        os.replace(os.path.join(open_dir, "result.json"), os.path.join(open_dir, "result.set-aside.json"))
        panels[n].close()
        panels[n] = ControlPanel(panels[n].workspace, poll=False)
    for r in range(rounds):
        for n in (counts if r % 2 == 0 else counts[::-1]):
            panel = panels[n]
            t = time.perf_counter()
            panel.refresh()
            open_refresh[n].append(time.perf_counter() - t)
            t = time.perf_counter()
            panel.history.model.sort_by("best_eval" if r % 2 else "name")
            sort[n].append(time.perf_counter() - t)
            t = time.perf_counter()
            panel.history.model.text_filter = "" if r % 2 else "tiny"
            filt[n].append(time.perf_counter() - t)
            assert len(panel.history.model.rows) == n
    med = lambda d: {n: C.median(v) for n, v in d.items()}  # noqa: E731
    C.table(["runs", "first table build (ms)", "refresh, one run open (ms)", "sort click (ms)", "filter (ms)"],
            [(f"{n:,}", 1e3 * med(build)[n], 1e3 * med(open_refresh)[n], 1e3 * med(sort)[n], 1e3 * med(filt)[n])
             for n in counts], title=f"Run table ({rounds} rounds, alternated; medians)")
    m = med(open_refresh)
    return {"table_build_s": build, "open_refresh_s": open_refresh, "sort_s": sort, "filter_s": filt,
            "open_ratio": m[counts[1]] / m[counts[0]]}


if __name__ == "__main__":
    sys.exit(main())
