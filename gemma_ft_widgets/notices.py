"""What to tell a user about a run, the same wherever they look: the JupyterLab extension's
status bar and toasts (through the server extension, gemma_ft_widgets/server) and the widget
panel's banner (Colab, Kaggle, VS Code: ui/toast.py).

Stdlib only, and stateless: everything is derived from a RunStatus and the tail of the run's
metrics.jsonl, so a restarted server or a new kernel says the same thing.

    prog = progress(status)          # step time, ETA, seconds since the trainer last wrote
    note = notice(status, prog)      # FINISHED / FAILED / ABORTED / ORPHANED / stalled, or None
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from typing import Any

from . import contract, stall

# "stalled": stall.py's rule, the one `gemma-ft status` and the panel use (the server's
# GemmaFT.stall_factor / stall_min_seconds settings can loosen or tighten it)
STALL_FACTOR = stall.PAUSE_FACTOR
STALL_MIN_S = stall.MIN_STALL_S
TAIL_BYTES = 16 * 1024  # the last events of metrics.jsonl: enough for ~50 steps, one small read


@dataclasses.dataclass
class Progress:
    """How a run is going, from the tail of its metrics: step time, ETA, idle time, stalled, latest events."""

    step_time_s: float | None = None  # median of the recent steps
    eta_s: float | None = None  # remaining steps times step_time_s (active runs only)
    idle_s: float | None = None  # seconds since metrics.jsonl was last written (active runs only)
    stalled: bool = False  # RUNNING, yet silent for longer than stall.py's limit
    last_step: dict[str, Any] | None = None  # the newest step event (latest metrics)
    last_eval: dict[str, Any] | None = None  # the newest eval event among the recent ones

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _state(status: Any) -> str:
    state = getattr(status, "state", "IDLE")
    return getattr(state, "value", state)


def recent_events(run_dir: str, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The complete events in the last `max_bytes` of a run's metrics.jsonl (oldest first)."""
    text = contract.tail_text(os.path.join(run_dir, contract.METRICS_NAME), max_lines=10_000,
                              max_bytes=max_bytes)
    events = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            events.append(e)
    return events


def progress(status: Any, now: float | None = None, stall_factor: float = STALL_FACTOR,
             stall_min_s: float = STALL_MIN_S) -> Progress:
    """Step time, ETA, idle time and the stall verdict of `status`'s run."""
    run_dir = getattr(status, "run_dir", None)
    if not run_dir:
        return Progress()
    now = time.time() if now is None else now
    events = recent_events(run_dir)
    steps = [e for e in events if e.get("event") == "step" and isinstance(e.get("step"), int)]
    evals = [e for e in events if e.get("event") == "eval"]
    times = [e["step_time_s"] for e in steps[-20:]
             if isinstance(e.get("step_time_s"), (int, float)) and e["step_time_s"] > 0]
    out = Progress(step_time_s=statistics.median(times) if times else None,
                   last_step=steps[-1] if steps else None, last_eval=evals[-1] if evals else None)
    state = _state(status)
    if state not in ("STARTING", "RUNNING", "STOPPING"):
        return out
    step, total = getattr(status, "step", None), getattr(status, "max_steps", None)
    if out.step_time_s is not None and isinstance(step, int) and isinstance(total, int):
        out.eta_s = round(max(0, total - step) * out.step_time_s, 1)
    try:
        out.idle_s = round(max(0.0, now - os.stat(os.path.join(run_dir, contract.METRICS_NAME)).st_mtime), 1)
    except OSError:
        out.idle_s = None
    basis = getattr(status, "stall_basis_s", None)  # the run's longest pause, seen or expected
    if state == "RUNNING" and out.idle_s is not None and out.last_step is not None and basis is not None:
        out.stalled = out.idle_s > stall.limit(basis, stall_factor, stall_min_s)
    return out


def duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _at(status: Any) -> str:
    step, total = getattr(status, "step", None), getattr(status, "max_steps", None)
    return f"step {'-' if step is None else step}/{'-' if not total else total}"


def notice(status: Any, prog: Progress | None = None) -> dict[str, str] | None:
    """The notification a run deserves now, or None: {key, level, title, text}.

    `key` names the event (run, attempt, what happened): a front end announces each key once,
    and only when it appears while it watches (the first look is a baseline).
    """
    name = getattr(status, "run_name", None)
    if not name:
        return None
    state = _state(status)
    base = f"{name}#{getattr(status, 'attempt', None) or 1}"
    reason = getattr(status, "reason", "") or ""
    if state == "FINISHED":
        loss = getattr(status, "loss", None)
        tail = f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        return {"key": f"{base}:FINISHED", "level": "success", "title": "Fine-tuning finished",
                "text": f"{name} finished at {_at(status)}{tail}."}
    if state == "FAILED":
        return {"key": f"{base}:FAILED", "level": "error", "title": "Fine-tuning failed",
                "text": f"{name} failed at {_at(status)}: {reason or 'unknown reason'}."}
    if state == "ABORTED":
        return {"key": f"{base}:ABORTED", "level": "info", "title": "Fine-tuning stopped",
                "text": f"{name} stopped at {_at(status)}" + (f" ({reason})." if reason else ".")}
    if state == "ORPHANED":
        return {"key": f"{base}:ORPHANED", "level": "warning", "title": "Fine-tuning run orphaned",
                "text": f"{name} is orphaned at {_at(status)}: {reason or 'its processes are gone'}. "
                        "Resume it from its last checkpoint, or clean it up."}
    if prog is not None and prog.stalled:
        return {"key": f"{base}:stalled@{getattr(status, 'step', None)}", "level": "warning",
                "title": "Fine-tuning run stalled",
                "text": f"{name} has written nothing for {duration(prog.idle_s)} ({_at(status)}); "
                        "check its logs (gemma-ft logs)."}
    return None
