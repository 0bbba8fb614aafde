"""8. Extension polling: the trainer's tokens/s while a Jupyter server with the extension answers
the JupyterLab extension's polls, against no server and no poll. Target >= 0.98.

No browser: a client process stands in for open JupyterLab tabs and GETs
/gemma-ft/api/workspaces (what each tab's status bar asks) at --rate per second, by default
1/s, five times what one tab asks while a run is active (every 5 s). The server is a real
`jupyter server` (with its other extensions, as installed) with gemma_ft_widgets.server
enabled on the run's workspace.

One real run (RunManager.start) trains the tiny model on a tiny batch. Once it logs steps, the
observers get alternate turns of a few seconds: "polled" (server + client running) and
"alone" (both frozen with SIGSTOP). Ratio = median polled / median alone tokens/s per turn,
from the trainer's own step events. Also printed: the server's and the client's CPU seconds
during the polled turns, and the answers' latency.

    python benchmarks/extension_polling.py
    python benchmarks/extension_polling.py --cycles 20 --rate 2
    python benchmarks/extension_polling.py --smoke          # the simulated trainer, short
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TARGET = 0.98
SIM = "gemma_ft_widgets.runs.simulated_trainer"

CLIENT = r"""
import json, signal, sys, time, urllib.request
url, token, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
lat, errors, states = [], 0, {}
while not stop:
    t = time.perf_counter()
    try:
        req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            run = json.loads(r.read())["workspaces"][0]["run"]
        lat.append(time.perf_counter() - t)
        state = run["state"] if run else None
        states[state] = states.get(state, 0) + 1
    except Exception:
        errors += 1
    time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t)))
lat.sort()
print(json.dumps({"polls": len(lat), "errors": errors, "states": states,
                  "median_ms": 1000 * lat[len(lat) // 2] if lat else None,
                  "p95_ms": 1000 * lat[int(len(lat) * 0.95)] if lat else None}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: str, ws: str) -> tuple[subprocess.Popen, str, str]:
    """A `jupyter server` with the extension on `ws`, in throw-away Jupyter folders."""
    home = os.path.join(root, "jupyter-home")
    dirs = {k: os.path.join(home, k.lower()) for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}
    confd = os.path.join(dirs["JUPYTER_CONFIG_DIR"], "jupyter_server_config.d")
    os.makedirs(confd)
    shutil.copy(os.path.join(C.REPO, "jupyter-config", "server-config", "gemma_ft_widgets.json"), confd)
    with open(os.path.join(dirs["JUPYTER_CONFIG_DIR"], "jupyter_server_config.json"), "w") as f:
        json.dump({"GemmaFT": {"workspaces": [ws]}}, f)
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    token, port = secrets.token_hex(16), free_port()
    log = open(os.path.join(root, "server.log"), "wb")
    proc = subprocess.Popen([C.PY, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--allow-root"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=C.env(**dirs), start_new_session=True)
    url = f"http://127.0.0.1:{port}/gemma-ft/api/workspaces"

    def answers():
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited; see {log.name}")
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    C.wait_until(answers, 120, 0.5, "the server's extension to answer")
    return proc, url, token


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--cycles", type=int, default=None, help="polled/alone turn pairs (default 16)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default 3)")
    p.add_argument("--rate", type=float, default=1.0, help="polls per second (default 1: five tabs)")
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
    from monitoring_overhead import cpu_seconds

    if trainer == "sim":
        os.environ["GEMMA_FT_SIM_STEP_TIME"] = "0.01"
    module = SIM if trainer == "sim" else contract.DEFAULT_TRAINER
    os.environ[contract.TRAINER_ENV] = module
    observers: dict[str, subprocess.Popen] = {}
    with C.TempDir("extension_polling", args.keep) as root:
        ws = os.path.join(root, "ws")
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        manager = RunManager(ws, trainer=module)
        run = manager.start({"model": "tiny", "dataset": dataset, "batch_size": args.batch,
                             "max_seq_len": args.seq, "max_steps": 1_000_000, "warmup_steps": 0,
                             "eval_fraction": 0.0, "eval_every": 1_000_000, "checkpoint_every": 100,
                             "keep_checkpoints": 3, "log_every": 1, "lora_rank": 8})
        client_out = os.path.join(root, "client.out")
        cpu = {}
        try:
            manager.wait(until=State.RUNNING, timeout=900, interval=0.2)
            observers["server"], url, token = start_server(root, ws)
            with open(client_out, "w") as f:
                observers["client"] = subprocess.Popen([C.PY, "-c", CLIENT, url, token, str(args.rate)],
                                                       stdout=f, stderr=subprocess.STDOUT, env=C.env())
            time.sleep(2.0)
            pids = [o.pid for o in observers.values()]

            def alive():
                for name, o in observers.items():
                    if o.poll() is not None:
                        raise RuntimeError(f"{name} exited with {o.returncode}")
                if manager.status().state is not State.RUNNING:
                    raise RuntimeError(f"the run is {manager.status().state.value}")

            cpu0 = {name: cpu_seconds(o.pid) for name, o in observers.items()}
            slices = C.alternate({"polled": lambda on: None,
                                  "alone": lambda on: (C.freeze if on else C.thaw)(pids)},
                                 slice_s, cycles, alive)
            cpu = {name: cpu_seconds(o.pid) - cpu0[name] for name, o in observers.items()}
        finally:
            for o in observers.values():
                C.thaw([o.pid])
                if o.poll() is None:
                    o.send_signal(signal.SIGTERM)
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
        client = [json.loads(x) for x in open(client_out) if x.startswith("{")]

    tokens = args.batch * args.seq
    points, other = [], False
    for e in events:
        if e.get("event") == "step":
            points.append((e["time"], tokens, not other))
            other = False
        elif e.get("event") in ("checkpoint", "eval"):
            other = True
    on = C.sliced_rate(points, slices, "polled")
    off = C.sliced_rate(points, slices, "alone")
    ratio = on["median"] / off["median"]
    polled_s = sum(b - a for lab, a, b in slices if lab == "polled")
    C.table(["trainer", "tokens/s median of turns", "min–max", "pooled", "turns"], [
        ("alone (server + client frozen)", off["median"], C.spread(off["per_turn"]), off["pooled"], off["turns"]),
        (f"polled ({args.rate:g}/s GET /gemma-ft/api/workspaces)", on["median"], C.spread(on["per_turn"]),
         on["pooled"], on["turns"]),
    ], title=f"Extension polling ({trainer} trainer, tiny batch {args.batch} x seq {args.seq}; "
             f"{cycles} cycles of {slice_s} s turns)")
    c = client[-1] if client else {}
    print(f"CPU during the polled turns: server {C.fmt(cpu.get('server'))} s, client {C.fmt(cpu.get('client'))} s "
          f"over {polled_s:.1f} s ({100 * sum(cpu.values()) / max(polled_s, 1e-9):.1f}% of one core); "
          f"polls {c.get('polls')}, errors {c.get('errors')}, states {c.get('states')}, latency median "
          f"{C.fmt(c.get('median_ms'))} ms, p95 {C.fmt(c.get('p95_ms'))} ms")
    if trainer == "sim":
        print("(simulated trainer: its steps are sleeps, so this run checks the mechanism only)")
    C.result("extension_polling", ratio=ratio, target=TARGET, note=f"{trainer} trainer: polled / alone tokens/s")
    C.result("extension_poll_latency_ms", value=c.get("median_ms"), unit="ms", target=None)
    C.finish(args, {"polled": on, "alone": off, "cpu_s": cpu, "client": c, "trainer": trainer, "rate": args.rate})
    return 0


if __name__ == "__main__":
    sys.exit(main())
