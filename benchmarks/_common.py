"""Shared helpers of the benchmark scripts (stdlib only: importing this never imports jax).

Every benchmark measures its subject and its reference side by side, alternated in one run
(A B A B ...), and reports medians and the ratio of medians: the machines here are shared
and noisy, so absolute times mean little. Each script prints a table and, for the smoke test
and for humans, lines of the form

    RESULT <name> ratio=<x> target=<op><y> met=<True|False>     (a ratio against a reference)
    RESULT <name> value=<x><unit> target=<op><y> met=<True|False>  (an absolute figure)

`met=n/a` where the issue sets no target (a figure reported for information).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
PY = sys.executable
RESULTS: list[dict] = []  # every RESULT line printed by this process, for --json


# -- argparse ---------------------------------------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and few rounds: checks that the benchmark runs, measures nothing")
    p.add_argument("--rounds", type=int, default=None, help="alternation rounds (default: per script)")
    p.add_argument("--json", dest="json_out", default=None, metavar="PATH",
                   help="also write the RESULT figures and the machine description to PATH")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (printed)")
    return p


# -- environment for subprocesses -----------------------------------------------------------

def env(**extra: str | None) -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH (subprocesses import this very copy),
    `extra` set (a None value removes the variable)."""
    out = dict(os.environ)
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
    out["PYTHONPATH"] = os.pathsep.join([str(REPO)] + parts)
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def run_json(cmd: Sequence[str], timeout: float, env_extra: dict | None = None, cwd: str | None = None) -> dict:
    """Run a worker that prints one JSON object as its last stdout line; return it."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env=env(**(env_extra or {})), cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                           f"\n--- stderr\n{proc.stderr[-5000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


class TempDir:
    """A temporary folder, removed at exit unless `keep`."""

    def __init__(self, prefix: str, keep: bool = False):
        self.path = tempfile.mkdtemp(prefix=f"gft-bench-{prefix}-")
        self.keep = keep

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        if self.keep:
            print(f"(kept {self.path})")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# -- statistics and printing -------------------------------------------------------------------

def median(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    """'min–max' of a sample, for the tables."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{fmt(min(xs))}–{fmt(max(xs))}"


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:
            return "nan"
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(cells[0], widths)))
    lines.append("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def check(value: float | None, op: str, target: float | None) -> bool | None:
    if target is None or value is None or value != value:
        return None if target is None else False
    return {">=": value >= target, "<=": value <= target}[op]


_UNSET = object()


def result(name: str, *, ratio: Any = _UNSET, value: Any = _UNSET, unit: str = "",
           target: float | None = None, op: str = ">=", note: str = "") -> bool | None:
    """Print one RESULT line and remember it: `ratio=` for a ratio against a reference,
    `value=` for an absolute figure (None: not available here, printed as nan)."""
    kind = "ratio" if ratio is not _UNSET else "value"
    x = ratio if kind == "ratio" else value
    x = None if x is _UNSET else x
    met = check(x, op, target)
    shown = "nan" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
    tgt = "none" if target is None else f"{op}{target:g}"
    line = f"RESULT {name} {kind}={shown}{unit if kind == 'value' and x is not None else ''} target={tgt} " \
           f"met={'n/a' if met is None else met}"
    if note:
        line += f"  # {note}"
    print(line, flush=True)
    RESULTS.append({"name": name, kind: x, "unit": unit, "op": op, "target": target, "met": met, "note": note})
    return met


def finish(args, extra: dict | None = None) -> None:
    """Write --json if asked (RESULT figures + machine)."""
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine(), "smoke": bool(args.smoke), "results": RESULTS,
                       **(extra or {})}, f, indent=2, default=str)


# -- the machine ------------------------------------------------------------------------------

def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "loadavg": load,
            "python": platform.python_version(), "jax": _version("jax"), "flax": _version("flax"),
            "optax": _version("optax"), "gemma": _version("gemma"), "platform": platform.platform()}


def print_machine() -> None:
    m = machine()
    load = "/".join(f"{x:.1f}" for x in m["loadavg"]) if m["loadavg"] else "?"
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, load {load}; Python {m['python']}, "
          f"jax {m['jax']}, flax {m['flax']}, optax {m['optax']}, gemma {m['gemma']}", flush=True)


# -- run folders for the real trainer -------------------------------------------------------

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
         "the of and to in is was for on with as by at from that this it be are or an").split()


def make_dataset(path: str, n: int = 64, chars: int = 4000, seed: int = 0) -> str:
    """A text dataset whose every example is longer than any max_seq_len used here, so each
    row is cut at max_seq_len: no padding, real tokens = batch x seq_len in every batch, and
    the trainer's tokens_per_s (non-padding input tokens) equals the plain definition."""
    import random

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            words = []
            size = 0
            while size < chars:
                wd = rng.choice(WORDS)
                words.append(wd)
                size += len(wd) + 1
            f.write(json.dumps({"text": " ".join(words)}) + "\n")
    return path


def write_config(run_dir: str, **cfg: Any) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "model_config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    return path


def read_events(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


def trainer_throughput(events: list[dict], tokens_per_step: int, skip: int) -> dict[str, float]:
    """Throughput of a trainer run from its metrics.jsonl.

    wall: real tokens of steps skip+1..last / (time of the last step event - time of step
          `skip`'s event): wall clock, so checkpoints (and anything else the loop does) count.
    per_step: median of the trainer's own per-step tokens_per_s (its step clock is reset
          after a checkpoint or an eval, so those are left out).
    """
    steps = [e for e in events if e.get("event") == "step"]
    last_start = max((i for i, e in enumerate(events) if e.get("event") == "start"), default=0)
    steps = [e for e in events[last_start:] if e.get("event") == "step"]
    if len(steps) <= skip + 1:
        raise RuntimeError(f"only {len(steps)} step events; need more than {skip + 1}")
    first, last = steps[skip], steps[-1]
    n = last["step"] - first["step"]
    wall = n * tokens_per_step / max(last["time"] - first["time"], 1e-9)
    per_step = median(e["tokens_per_s"] for e in steps[skip + 1:])
    checked = median(e["tokens_per_s"] * e["step_time_s"] for e in steps[skip + 1:])
    compile_s = next((e.get("seconds") for e in events if e.get("event") == "compile"), None)
    ckpts = sum(1 for e in events if e.get("event") == "checkpoint" and first["step"] < e["step"] <= last["step"])
    return {"wall": wall, "per_step": per_step, "steps": n, "tokens_per_step_logged": checked,
            "compile_s": compile_s, "checkpoints_in_window": ckpts,
            "median_step_time_s": median(e["step_time_s"] for e in steps[skip + 1:])}


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# A wider and deeper Gemma-architecture model than `tiny`, for CPU runs where the step time
# dominates the loop's own costs (the "d=256, 4 layers, vocab 4096").
ARCHS = {
    "tiny": None,  # the package's own tiny model
    "d256": dict(name="bench-d256", num_layers=4, embed_dim=256, hidden_dim=1024, num_heads=4,
                 head_dim=64, num_kv_heads=1, vocab_size=4096),
}


def register_arch(arch: str) -> str:
    """Make `arch` a model name the package accepts, in this process (trainer workers call
    this before the trainer reads its config). Returns the model name to put in the config.

    The package's model table has only `tiny` and the real Gemma models; the benchmark adds
    a larger random-weight tiny-family entry (from `tiny-random`) (same tokenizer, same Gemma 3 layout) instead of
    editing the table. Its tokens all fall in the first 512 ids; the rest of the vocabulary
    is still part of every logits matmul, which is what makes the step heavy.
    """
    if ARCHS.get(arch) is None:
        return "tiny"
    import dataclasses

    from gemma_ft_widgets import models

    shape = dict(ARCHS[arch])
    spec = dataclasses.replace(models.TINY_RANDOM, **shape)
    params = _count_params(spec)
    spec = dataclasses.replace(spec, params=params)
    models.MODELS[spec.name] = spec
    return spec.name


def _count_params(spec) -> int:
    v, d, f, L = spec.vocab_size, spec.embed_dim, spec.hidden_dim, spec.num_layers
    nh, kv, h = spec.num_heads, spec.num_kv_heads, spec.head_dim
    per_layer = d * nh * h * 2 + 2 * d * kv * h + 2 * d * f + f * d + 4 * d + 2 * h
    return v * d + L * per_layer + d


# -- time-sliced alternation -------------------------------------------------------------------
#
# On a shared 2-core machine, two measurements taken a minute apart see different loads. To
# compare A with B under the same conditions, the subjects run in turns of a couple of
# seconds, A B C A B C ..., for many cycles: every process that is not having its turn is
# frozen with SIGSTOP (all its threads, XLA's included) and thawed with SIGCONT. Each subject
# timestamps its own progress (the trainer's metrics events; a bare loop's chunk lines), and
# an interval counts only when both of its ends fall inside the same turn, so no frozen time is
# ever counted. SIGSTOP/SIGCONT cannot be caught and leave the trainer's own signal handlers
# alone.

import signal  # noqa: E402


def freeze(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass


def thaw(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def alternate(turns: dict[str, Callable[[bool], None]], slice_s: float, cycles: int,
              alive: Callable[[], None] | None = None) -> list[tuple[str, float, float]]:
    """Give each label a turn of `slice_s` seconds, `cycles` times, rotating the order every
    cycle. `turns[label](True)` starts its turn, `(False)` ends it. Returns (label, start,
    end) in time.time() seconds. `alive()` may raise to abort (a subject died)."""
    labels = list(turns)
    out = []
    for c in range(cycles):
        k = c % len(labels)
        for label in labels[k:] + labels[:k]:
            a = time.time()
            turns[label](True)
            time.sleep(slice_s)
            turns[label](False)
            b = time.time()
            out.append((label, a, b))
            if alive is not None:
                alive()
    return out


def slice_of(t: float, slices: Sequence[tuple[str, float, float]], label: str, slack: float = 0.05) -> int | None:
    """Index of the `label` turn that contains time t (None: outside every turn of it)."""
    for i, (lab, a, b) in enumerate(slices):
        if lab == label and a <= t <= b + slack:
            return i
    return None


def sliced_rate(points: Sequence[tuple[float, float, bool]], slices, label: str) -> dict[str, Any]:
    """Rate (units/s) from progress points (time, units done since the previous point,
    counts) within `label`'s turns: consecutive points make the intervals."""
    intervals = []
    prev = None
    for t, units, counts in points:
        if prev is not None and counts:
            intervals.append((prev, t, units))
        prev = t
    return sliced_intervals(intervals, slices, label)


def sliced_intervals(intervals: Sequence[tuple[float, float, float]], slices, label: str) -> dict[str, Any]:
    """Rate (units/s) from (start, end, units) intervals: one counts when both ends lie in
    the same turn of `label`. Returns per-turn rates, their median, and the pooled rate."""
    per: dict[int, list[float]] = {}
    for t0, t1, units in intervals:
        s = slice_of(t0, slices, label)
        if s is not None and s == slice_of(t1, slices, label):
            acc = per.setdefault(s, [0.0, 0.0])
            acc[0] += units
            acc[1] += t1 - t0
    rates = [u / d for u, d in per.values() if d > 0]
    units = sum(u for u, _ in per.values())
    secs = sum(d for _, d in per.values())
    return {"median": median(rates), "pooled": units / secs if secs else float("nan"),
            "turns": len(rates), "seconds": secs, "per_turn": rates,
            "by_turn": {s: u / d for s, (u, d) in per.items() if d > 0}}


def paired_ratios(slices: Sequence[tuple[str, float, float]], on: dict[str, Any], off: dict[str, Any]) -> list[float]:
    """Per cycle, the `on` turn's rate over the `off` turn's beside it (sliced_intervals'
    results of two labels taking turns in pairs, as `alternate` gives them): neighbouring
    turns share the machine's load, so a drifting load cancels out of each ratio."""
    out = []
    for i in range(0, len(slices) - 1, 2):
        pair = (i, i + 1)
        a = next((on["by_turn"][k] for k in pair if k in on["by_turn"]), None)
        b = next((off["by_turn"][k] for k in pair if k in off["by_turn"]), None)
        if a is not None and b:
            out.append(a / b)
    return out


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentiles: the spread a median is reported with."""
    xs = sorted(x for x in xs if x is not None)
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def sliced_processes(specs: dict[str, dict], slice_s: float, cycles: int, root: str,
                     ready_timeout: float = 900) -> list[tuple[str, float, float]]:
    """Start one process per label, freeze each as soon as `ready()` says so, then give them
    turns (`alternate`). specs[label] = {"cmd": [...], "ready": callable, "env": {...} (extra
    environment), "stop": signal number sent at the end (default SIGTERM)}. Each process's
    output goes to ROOT/<label>.log. At the end every process is thawed and stopped, one at a
    time, in the order of `specs`. Returns the turns."""
    procs: dict[str, subprocess.Popen] = {}
    logs = {k: os.path.join(root, f"{k}.log") for k in specs}
    slices: list[tuple[str, float, float]] = []
    try:
        for label, spec in specs.items():
            with open(logs[label], "w") as log:
                procs[label] = subprocess.Popen(spec["cmd"], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env(**spec.get("env", {})))

        def alive():
            for label, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{label} exited with {p.returncode}:\n{open(logs[label]).read()[-4000:]}")

        frozen: set[str] = set()
        deadline = time.monotonic() + ready_timeout
        while len(frozen) < len(procs):  # setups and compiles run concurrently; freeze each once ready
            alive()
            for label, p in procs.items():
                if label not in frozen and specs[label]["ready"]():
                    freeze([p.pid])
                    frozen.add(label)
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {ready_timeout}s: {sorted(set(procs) - frozen)}")
            time.sleep(0.1)

        def turn(label):
            return lambda on: (thaw if on else freeze)([procs[label].pid])

        slices = alternate({label: turn(label) for label in specs}, slice_s, cycles, alive)
    finally:
        for label, p in procs.items():
            if p.poll() is None:
                thaw([p.pid])
                p.send_signal(specs[label].get("stop", signal.SIGTERM))
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return slices


def step_points(events: list[dict], tokens_per_step: float, skip: int = 5,
                every_interval: bool = False) -> list[tuple[float, float, bool]]:
    """Progress points of a trainer from its step events (see sliced_rate): the first `skip`
    steps do not count, nor (unless `every_interval`: the wall clock) an interval that holds a
    checkpoint or an eval event."""
    points, other = [], False
    for e in events:
        kind = e.get("event")
        if kind == "step":
            points.append((e["time"], tokens_per_step, e["step"] > skip and (every_interval or not other)))
            other = False
        elif kind in ("checkpoint", "eval"):
            other = True
    return points
