"""4. Import and attach: `import gemma_ft_widgets` plus building a panel attached to a running
run, against `import jax` alone. Target: <= 1 s, and no jax (nor flax, optax, tensorflow,
gemma, orbax) imported.

A simulated run (the jax-free protocol trainer, one step every 50 ms) is RUNNING in a temporary
workspace. Fresh interpreters are then started in turns, A B A B ...:

  A  t0; import gemma_ft_widgets; from gemma_ft_widgets import ControlPanel; t1;
     panel = ControlPanel(workspace) (polling, as a user builds it); panel.wait_ready(); t2
     -> import = t1 - t0, attach = t2 - t1, total = t2 - t0; the panel must show RUNNING.
  B  t0; import jax; t1

Times are taken inside the child (interpreter start-up excluded; reported apart as the
child's whole life). One extra `python -X importtime` of A lists its costliest imports.
Environment as found: here PYTHONDONTWRITEBYTECODE=1 is set, so this checkout's own modules
are compiled from source in every child (site-packages have their .pyc).

    python benchmarks/import_attach.py
    python benchmarks/import_attach.py --smoke
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TARGET_S = 1.0
HEAVY = ("jax", "jaxlib", "flax", "optax", "tensorflow", "gemma", "orbax", "kauldron")
SIM = "gemma_ft_widgets.train.simulated"

CHILD_A = r"""
import json, sys, time
t0 = time.perf_counter()
import gemma_ft_widgets
from gemma_ft_widgets import ControlPanel
t1 = time.perf_counter()
panel = ControlPanel(sys.argv[1])
ready = panel.wait_ready(60)
t2 = time.perf_counter()
state = panel.state
heavy = [m for m in %r if m in sys.modules]
panel.close()
print(json.dumps({"import": t1 - t0, "attach": t2 - t1, "total": t2 - t0, "ready": ready,
                  "state": state, "heavy": heavy}))
""" % (HEAVY,)

CHILD_B = r"""
import json, time
t0 = time.perf_counter()
import jax
t1 = time.perf_counter()
print(json.dumps({"total": t1 - t0}))
"""


def child(code: str, *args: str) -> dict:
    t = time.perf_counter()
    out = C.run_json([C.PY, "-c", code, *args], timeout=300)
    out["process"] = time.perf_counter() - t
    return out


PACKAGES = ("ipywidgets", "IPython", "bqplot", "pandas", "numpy", "traitlets", "psutil", "bqscales")


def importtime_top(workspace: str) -> list[tuple[str, float]]:
    """Where the import goes, from one `python -X importtime` of A's imports: each big
    third-party package's cumulative time where it is first imported (nested ones are part of
    their importer's time too), and the self time of this package's own modules (compiling
    their source, with PYTHONDONTWRITEBYTECODE=1, plus running them)."""
    proc = subprocess.run([C.PY, "-X", "importtime", "-c",
                           "import gemma_ft_widgets; from gemma_ft_widgets import ControlPanel"],
                          capture_output=True, text=True, env=C.env(), timeout=300)
    first: dict[str, float] = {}
    own = total = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            self_us, cum_us = int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            continue
        name = parts[2].strip()
        indent = len(parts[2]) - len(parts[2].lstrip())
        if indent <= 1:
            total += cum_us / 1e6
        if name in PACKAGES:
            first[name] = cum_us / 1e6  # importtime prints a module after its children: keep the last
        if name.startswith("gemma_ft_widgets"):
            own += self_us / 1e6
    rows = sorted(first.items(), key=lambda r: -r[1])
    rows.append(("gemma_ft_widgets.* (own modules, self time)", own))
    rows.append(("all imports (sum of top levels)", total))
    return rows


def main(argv=None) -> int:
    p = C.parser(__doc__)
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.smoke else 7)
    C.print_machine()
    os.environ["GEMMA_FT_SIM_STEP_TIME"] = "0.05"  # inherited by the supervisor and the trainer
    from gemma_ft_widgets import contract
    from gemma_ft_widgets.config import demo_config
    from gemma_ft_widgets.runs import RunManager, State

    os.environ[contract.TRAINER_ENV] = SIM
    with C.TempDir("import", args.keep) as root:
        ws = os.path.join(root, "ws")
        manager = RunManager(ws, trainer=SIM)
        manager.start(demo_config(max_steps=100_000, checkpoint_every=1000, eval_every=1000))
        try:
            manager.wait(until=State.RUNNING, timeout=60, interval=0.05)
            a, b = [], []
            for r in range(rounds):
                for which in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    if which == "A":
                        x = child(CHILD_A, ws)
                        a.append(x)
                        print(f"  [round {r + 1}] gemma_ft_widgets: import {x['import']:.3f} s + attach "
                              f"{x['attach']:.3f} s = {x['total']:.3f} s (state {x['state']}, heavy "
                              f"{x['heavy'] or 'none'}; process {x['process']:.2f} s)", flush=True)
                    else:
                        x = child(CHILD_B)
                        b.append(x)
                        print(f"  [round {r + 1}] import jax: {x['total']:.3f} s (process {x['process']:.2f} s)",
                              flush=True)
            top = importtime_top(ws)
        finally:
            manager.stop(force=True)

    total_a = C.median(x["total"] for x in a)
    jax_s = C.median(x["total"] for x in b)
    heavy = sorted({m for x in a for m in x["heavy"]})
    states = sorted({x["state"] for x in a})
    C.table(["measure", "median (s)", "min–max (s)"], [
        ("import gemma_ft_widgets + ControlPanel", C.median(x["import"] for x in a), C.spread([x["import"] for x in a])),
        ("attach: ControlPanel(ws) until first poll", C.median(x["attach"] for x in a),
         C.spread([x["attach"] for x in a])),
        ("import + attach", total_a, C.spread([x["total"] for x in a])),
        ("import jax", jax_s, C.spread([x["total"] for x in b])),
        ("child process, gemma_ft_widgets (whole life)", C.median(x["process"] for x in a),
         C.spread([x["process"] for x in a])),
        ("child process, import jax (whole life)", C.median(x["process"] for x in b),
         C.spread([x["process"] for x in b])),
    ], title=f"Import and attach ({rounds} rounds, alternated; panel state seen: {', '.join(states)})")
    C.table(["package (python -X importtime)", "seconds"], top,
            title="Costliest imports of `import gemma_ft_widgets; from gemma_ft_widgets import ControlPanel`")
    if states != ["RUNNING"]:
        print(f"WARNING: the panel did not show the running run: {states}")
    C.result("import_attach_s", value=total_a, unit="s", target=TARGET_S, op="<=",
             note="import gemma_ft_widgets + ControlPanel attached to a running run")
    C.result("import_attach_heavy_modules", value=len(heavy), unit="", target=0, op="<=",
             note=("imported: " + ", ".join(heavy)) if heavy else "no jax/flax/optax/tensorflow/gemma")
    C.result("import_attach_vs_import_jax", ratio=total_a / jax_s, note="no target; lower is lighter")
    C.finish(args, {"a": a, "b": b, "importtime_top": top})
    return 0


if __name__ == "__main__":
    sys.exit(main())
