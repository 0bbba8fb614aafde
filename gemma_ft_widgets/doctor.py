"""`gemma-ft doctor`: can this environment train, and on what? No jax import in this process.

It reports the Python, the installed jax packages and whether their versions agree, the
accelerator the machine has, the workspace's filesystem and free space. `probe=True` also asks
jax itself, in a subprocess, which devices it sees: that is the one answer that settles whether
a run would use the GPU/TPU or fall back to the CPU.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from . import accelerator, contract

# Enough for a cold `import jax` plus backend start-up on a slow disk.
PROBE_TIMEOUT_S = 180
_PROBE = ("import json, jax; d = jax.devices(); "
          "print(json.dumps({'platform': d[0].platform, 'device_kind': d[0].device_kind, 'count': len(d)}))")


def probe_jax(python: str = sys.executable, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """What jax sees, from a child process: {platform, device_kind, count} or {error}."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        return {"error": f"importing jax took longer than {timeout:.0f} s"}
    except OSError as e:
        return {"error": f"cannot run {python}: {e}"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        err = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"jax failed to start: {err}"}
    return json.loads(lines[-1])


def filesystem_of(path: str) -> dict[str, Any]:
    """The filesystem holding `path` (or its nearest existing parent): type, mount, free bytes."""
    import psutil

    here = os.path.abspath(path)
    while not os.path.exists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    real = os.path.realpath(here)
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and \
                (best is None or len(mount) > len(best.mountpoint)):
            best = part
    usage = shutil.disk_usage(here)
    return {"path": os.path.abspath(path), "exists": os.path.exists(path),
            "fstype": best.fstype if best else None, "mountpoint": best.mountpoint if best else None,
            "free_bytes": usage.free, "total_bytes": usage.total}


def report(workspace: str | None = None, probe: bool = True) -> dict[str, Any]:
    """Everything `gemma-ft doctor` prints, as data; `problems` lists what blocks a good run."""
    accel = accelerator.detect()
    stack = accelerator.jax_stack()
    ws = workspace or os.environ.get(contract.WORKSPACE_ENV) or contract.DEFAULT_WORKSPACE
    problems = list(stack.problems)
    if stack.jax is None:
        problems.append("jax is not installed: pip install gemma_ft_widgets")
    seen = probe_jax() if probe and stack.jax is not None else None
    if seen is not None and "error" in seen:
        problems.append(seen["error"])
    elif seen is not None and accel.present and seen.get("platform") == "cpu":
        problems.append(accelerator.no_accelerator_message(accel, stack))
    elif seen is None and accel.present and not _has_plugin_for(accel, stack):
        problems.append(accelerator.no_accelerator_message(accel, stack))
    fs = filesystem_of(ws)
    if fs["free_bytes"] < 2 * 2**30:
        problems.append(f"only {fs['free_bytes'] / 2**30:.1f} GiB free for the workspace; checkpoints need room")
    return {
        "python": platform.python_version(), "python_executable": sys.executable,
        "jax_stack": stack.versions, "accelerator": {
            "kind": accel.kind, "name": accel.name, "count": accel.count,
            "memory_bytes": accel.memory_bytes, "evidence": accel.evidence},
        "jax_sees": seen, "workspace": fs, "problems": problems, "ok": not problems,
    }


def _has_plugin_for(accel: accelerator.Accelerator, stack: accelerator.JaxStack) -> bool:
    names = stack.plugins()
    if accel.kind == "tpu":
        return "libtpu" in names
    return any(n.startswith(("jax-cuda", "jax-rocm")) for n in names)


def format_report(r: dict[str, Any]) -> str:
    """The report as the terminal shows it."""
    accel, fs, seen = r["accelerator"], r["workspace"], r["jax_sees"]
    stack = r["jax_stack"]
    versions = ", ".join(f"{k} {v}" for k, v in stack.items()) or "not installed"
    if accel["kind"] == "cpu":
        mem = f", {accel['memory_bytes'] / 2**30:.0f} GiB RAM" if accel["memory_bytes"] else ""
        machine = f"no GPU or TPU found; CPU {accel['name']} ({accel['count']} cores{mem})"
    else:
        mem = f" ({accel['memory_bytes'] / 2**30:.0f} GiB each)" if accel["memory_bytes"] else ""
        machine = f"{accel['count']} × {accel['name']}{mem}, found by {accel['evidence']}"
    if seen is None:
        jax_line = "not asked (--no-probe)"
    elif "error" in seen:
        jax_line = seen["error"]
    else:
        jax_line = f"{seen['count']} × {seen['platform']} ({seen['device_kind']})"
    lines = [
        f"python:      {r['python']}  ({r['python_executable']})",
        f"jax:         {versions}",
        f"machine:     {machine}",
        f"jax sees:    {jax_line}",
        f"workspace:   {fs['path']}" + ("" if fs["exists"] else "  (not created yet)"),
        f"filesystem:  {fs['fstype'] or '?'} on {fs['mountpoint'] or '?'}, "
        f"{fs['free_bytes'] / 2**30:.1f} GiB free of {fs['total_bytes'] / 2**30:.1f} GiB",
    ]
    if r["problems"]:
        lines.append("problems:")
        lines += [f"  - {p}" for p in r["problems"]]
    else:
        lines.append("ok: this environment can train" + (" on the CPU" if accel["kind"] == "cpu" else ""))
    return "\n".join(lines)


def summary_line() -> tuple[str, bool]:
    """One line for the panel's form, without starting jax: (text, whether it is a warning)."""
    accel = accelerator.detect()
    stack = accelerator.jax_stack()
    text = f"{stack.describe()}; {accel.describe()}"
    if accel.present and not _has_plugin_for(accel, stack):
        return text + f". jax will not see it: {accelerator.fix_command(accel, stack)}", True
    if stack.problems:
        return text + ". " + "; ".join(stack.problems), True
    return text, False
