"""2. Monitoring overhead: the trainer's tokens/s with two panels polling at 1 Hz and
`gemma-ft logs --follow` running, against no observer. Target >= 0.98.

The harness is _observed_run.py's (shared with extension_polling.py): one real run of the tiny
model, observers that alternate turns "observed" (running) and "alone" (frozen with SIGSTOP),
the median over cycles of observed / alone tokens/s, each cycle's turns side by side. The
observers:

  panels   a process holding two ControlPanel(workspace, poll=True, poll_interval=1.0), as a
           kernel with two panel cells would;
  follow   `python -m gemma_ft_widgets.cli logs --follow --workspace WS` (the `gemma-ft`
           console script's code), its output to a file.

After a frozen turn a panel catches up on the lines it missed in its first poll, as a panel
does after a busy spell.

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import _observed_run as R  # noqa: E402

TARGET = 0.98

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


def start_observers(root: str, ws: str) -> dict:
    with open(os.path.join(root, "panels.out"), "w") as f1, open(os.path.join(root, "follow.out"), "w") as f2:
        panels = subprocess.Popen([C.PY, "-c", PANELS, ws], stdout=f1, stderr=subprocess.STDOUT, env=C.env())
        follow = subprocess.Popen([C.PY, "-m", "gemma_ft_widgets.cli", "logs", "--follow", "--workspace", ws],
                                  stdout=f2, stderr=subprocess.STDOUT, env=C.env())
    observers = {"panels": (panels, signal.SIGTERM), "follow": (follow, signal.SIGINT)}
    try:
        R.wait_ready(os.path.join(root, "panels.out"))
    except BaseException:
        for o, _ in observers.values():
            o.kill()
        raise
    return observers


def collect(root: str) -> dict:
    stats = [json.loads(x) for x in open(os.path.join(root, "panels.out")) if x.startswith("{")]
    return {"panels": stats[-1] if stats else {}, "follow_bytes": os.path.getsize(os.path.join(root, "follow.out"))}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    R.add_args(p, "observed")
    args = p.parse_args(argv)
    C.print_machine()
    m = R.measure(args, "monitoring", "observed", start_observers, collect)
    R.report(m, "observed (2 panels @1 Hz + logs --follow)", "alone (observers frozen)",
             f"Monitoring overhead (tiny batch {args.batch} x seq {args.seq})")
    ps = m["panels"]
    print(f"panel polls {ps.get('polls')}, poll errors {ps.get('poll_errors')}, panel states {ps.get('states')}; "
          f"follow printed {m['follow_bytes']} bytes")
    C.result("monitoring_overhead", ratio=m["ratio"], target=TARGET,
             note=f"{m['trainer']} trainer: observed / alone tokens/s, median of {len(m['pairs'])} paired cycles")
    C.finish(args, {"observed": m["on"], "alone": m["off"], "pairs": m["pairs"], "quartiles": m["quartiles"],
                    "observer_cpu_s": m["cpu_s"], "panels": ps, "trainer": m["trainer"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
