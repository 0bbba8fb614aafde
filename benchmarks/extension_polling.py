"""8. Extension polling: the trainer's tokens/s while a Jupyter server with the extension answers
the JupyterLab extension's polls, against no server and no poll. Target >= 0.98.

No browser: a client process stands in for open JupyterLab tabs and GETs
/gemma-ft/api/workspaces (what each tab's status bar asks) at --rate per second, by default
1/s, five times what one tab asks while a run is active (every 5 s). The server is a real
`jupyter server` (with its other extensions, as installed) with gemma_ft_widgets.server
enabled on the run's workspace.

The harness is _observed_run.py's (shared with monitoring_overhead.py): one real run of the
tiny model; server and client alternate turns "polled" (running) and "alone" (frozen with
SIGSTOP), 16 cycles of 3 s by default (about 2 minutes with start-up). The figure is the
median over cycles of polled / alone tokens/s, each cycle's two turns side by side, printed
with its quartiles; also printed: the server's and the client's CPU seconds during the
polled turns, and the answers' latency.

    python benchmarks/extension_polling.py
    python benchmarks/extension_polling.py --cycles 24 --rate 2
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
import _observed_run as R  # noqa: E402

TARGET = 0.98

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


def start_observers_at(rate: float):
    def start(root: str, ws: str) -> dict:
        server, url, token = start_server(root, ws)
        with open(os.path.join(root, "client.out"), "w") as f:
            client = subprocess.Popen([C.PY, "-c", CLIENT, url, token, str(rate)],
                                      stdout=f, stderr=subprocess.STDOUT, env=C.env())
        time.sleep(2.0)
        return {"server": (server, signal.SIGTERM), "client": (client, signal.SIGTERM)}

    return start


def collect(root: str) -> dict:
    client = [json.loads(x) for x in open(os.path.join(root, "client.out")) if x.startswith("{")]
    return {"client": client[-1] if client else {}}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    R.add_args(p, "polled")
    p.add_argument("--rate", type=float, default=1.0, help="polls per second (default 1: five tabs)")
    args = p.parse_args(argv)
    C.print_machine()
    m = R.measure(args, "extension_polling", "polled", start_observers_at(args.rate), collect)
    R.report(m, f"polled ({args.rate:g}/s GET /gemma-ft/api/workspaces)", "alone (server + client frozen)",
             f"Extension polling (tiny batch {args.batch} x seq {args.seq})")
    c = m["client"]
    print(f"polls {c.get('polls')}, errors {c.get('errors')}, states {c.get('states')}, latency median "
          f"{C.fmt(c.get('median_ms'))} ms, p95 {C.fmt(c.get('p95_ms'))} ms")
    C.result("extension_polling", ratio=m["ratio"], target=TARGET,
             note=f"{m['trainer']} trainer: polled / alone tokens/s, median of {len(m['pairs'])} paired cycles")
    C.result("extension_poll_latency_ms", value=c.get("median_ms"), unit="ms", target=None)
    C.finish(args, {"polled": m["on"], "alone": m["off"], "pairs": m["pairs"], "quartiles": m["quartiles"],
                    "cpu_s": m["cpu_s"], "client": c, "trainer": m["trainer"], "rate": args.rate})
    return 0


if __name__ == "__main__":
    sys.exit(main())
