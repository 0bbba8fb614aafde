"""Text formatting for the panel: numbers, bytes, durations, HTML escaping. Pure functions."""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from typing import Any

from ..runs.errors import Remedy, RunError
from .state_table import look, state_value  # state_value: fmt's name for it too

DASH = "—"


def esc(text: Any) -> str:
    """HTML-escaped text; None becomes ""."""
    return html.escape("" if text is None else str(text))


# What to do about a refusal (runs.Remedy), in the panel's own buttons; where the panel has no
# button for it, the terminal command (as remedies.py words it for the CLI).
_REMEDY_WORDS = {
    Remedy.STOP: "stop it with Abort on its dashboard",
    Remedy.CLEAN: "clear it with Clean up",
    Remedy.CLEAN_FORCE: "if that host is gone, clear it in a terminal with `gemma-ft clean --force`",
    Remedy.RESTORE_LOCK: "put it back with Restore lock on its dashboard",
    Remedy.RESUME: "resume it with Resume",
    Remedy.EXTEND: "to train it further, run `gemma-ft resume {run} --max-steps N` in a terminal",
    Remedy.NEW_RUN: "start a new run with New run",
    Remedy.QUEUE_RESUME: "let the queue go on with Resume queue",
}


def with_remedies(message: Any, remedies: tuple = (), run: str | None = None) -> str:
    """`message`, then what to do about it in the panel's buttons (runs.Remedy values)."""
    steps = [_REMEDY_WORDS[Remedy(r)].format(run=run or "RUN") for r in remedies]
    return "; ".join([str(message), *steps])


def run_error(e: RunError) -> str:
    """A RunError as the panel words it: its message, then its remedies as buttons."""
    return with_remedies(e, e.remedies, e.run)


def badge(state: Any) -> str:
    """A run state as a coloured badge (HTML)."""
    s = state_value(state)
    bg, fg = look(state).badge
    return (f'<span class="gft-badge gft-badge-{s.lower()}" style="background:{bg};color:{fg};'
            f'padding:2px 10px;border-radius:10px;font-weight:600;font-size:0.9em">{esc(s)}</span>')


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def number(x: Any, digits: int = 4) -> str:
    """`digits` significant digits, written out as the form's number boxes write them (as a
    browser prints a number: positional from 1e-6 up), so a KPI and its field read alike:
    1.235, 0.0003, 0.000299, 1.20e-07; NaN/inf shown as such."""
    if x is None:
        return DASH
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if not _finite(x):
        return esc(x)
    if x != 0 and (abs(x) < 1e-6 or abs(x) >= 1e6):
        return f"{x:.{max(1, digits - 2)}e}"
    import numpy as np

    return np.format_float_positional(x, precision=digits, unique=True, fractional=False, trim="-")


def rate(x: Any) -> str:
    """A rate for a KPI: 1.23M, 45.6k or 789; a dash when not a finite number."""
    if not _finite(x):
        return DASH
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def nbytes(x: Any) -> str:
    """A size in B, KiB, MiB or GiB; a dash when unknown or negative."""
    if not _finite(x) or x < 0:
        return DASH
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= size:
            return f"{x / size:.2f} {unit}" if unit == "GiB" else f"{x / size:.0f} {unit}"
    return f"{x:.0f} B"


def duration(seconds: Any) -> str:
    """'42 s', '3 min 05 s', '2 h 04 min'."""
    if not _finite(seconds) or seconds < 0:
        return DASH
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    return f"{s // 86400} d {(s % 86400) // 3600:02d} h"


def _local(iso: Any):
    """A UTC ISO timestamp ('2025-01-31T12:00:05.123456Z') as a local datetime, or None."""
    if not isinstance(iso, str) or len(iso) < 19:
        return None
    try:
        t = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.UTC)).astimezone()


def when(iso: Any) -> str:
    """'2025-01-31 13:00:05' in local time (the machine's) from a UTC ISO timestamp."""
    t = _local(iso)
    return DASH if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def transitions(text: str) -> str:
    """status.log's lines ('<ISO UTC> STATE message'), newest first, in local time: the time
    alone for today's, with the date for older ones."""
    today = _dt.datetime.now().astimezone().date()
    out = []
    for line in (text or "").splitlines():
        stamp, _, rest = line.partition(" ")
        t = _local(stamp)
        if t is None:
            out.append(line)
            continue
        out.append(t.strftime("%H:%M:%S" if t.date() == today else "%Y-%m-%d %H:%M:%S") + "  " + rest)
    return "\n".join(reversed(out))


def count(n: Any) -> str:
    """A count of steps or examples with thousands separators: '12,500'."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        return DASH if n is None else esc(n)
    return f"{int(n):,}"


def pre(text: str, max_height: str = "240px", css_class: str = "gft-pre", tail: bool = True) -> str:
    """A scrollable <pre> that starts scrolled to its end (column-reverse keeps the tail in
    view each time the value is replaced), or with `tail=False` at its top (newest-first text)."""
    flow = "display:flex;flex-direction:column-reverse;" if tail else ""
    return (f'<div class="{css_class}" style="max-height:{max_height};overflow:auto;{flow}'
            f'border:1px solid #ddd;border-radius:4px;background:#fafafa">'
            f'<pre style="margin:0;padding:6px;font-size:12px;line-height:1.35;white-space:pre-wrap;'
            f'word-break:break-all">{esc(text) if text else "<i>(empty)</i>"}</pre></div>')


def error_html(messages: list[str] | None) -> str:
    """The errors under a field, as red lines (HTML-escaped); "" for none."""
    if not messages:
        return ""
    return "".join(f'<div class="gft-field-error" style="color:#c62828;font-size:0.9em;overflow-wrap:anywhere;'
                   f'line-height:1.3">{esc(m)}</div>' for m in messages)


def note(text: str, kind: str = "info") -> str:
    """`text` (HTML, not escaped) in a box coloured for `kind`: info, ok, warn or error."""
    colour = {"info": "#0d47a1", "ok": "#1b5e20", "warn": "#e65100", "error": "#b71c1c"}[kind]
    bg = {"info": "#e3f2fd", "ok": "#e8f5e9", "warn": "#fff3e0", "error": "#ffebee"}[kind]
    return (f'<div class="gft-note gft-note-{kind}" style="color:{colour};background:{bg};'
            f'padding:6px 10px;border-radius:4px;margin:2px 0;overflow-wrap:anywhere">{text}</div>')


def stop_message(report: Any) -> str:
    """What a stop did, for a person: 'Stopped NAME after 0.4 s; it saved a checkpoint and is
    now ABORTED.' (the signals and pids it took are in the CLI's report and supervisor.log)."""
    if getattr(report, "nothing_to_stop", False) or not getattr(report, "run_dir", None):
        return with_remedies(getattr(report, "message", "") or "nothing to stop", getattr(report, "remedies", ()))
    name = os.path.basename(report.run_dir)
    state = state_value(getattr(report, "state", None))
    forced = any("SIGKILL" in s for s in getattr(report, "sent", []) or [])
    text = f"{'Force-stopped' if forced else 'Stopped'} {name} after {report.seconds:.1f} s; it is now {state}"
    if report.reason:
        text += f" ({report.reason})"
    if not getattr(report, "group_gone", True):
        text += ". Warning: some of its processes are still running"
    return text + "."
