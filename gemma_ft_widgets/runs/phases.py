"""What a STARTING trainer is doing: its `phase` events, described for people.

The trainer (train/phases.py) writes one event as each phase begins, and progress events
during the long ones, each a `phase` event (contract.EVENT_PHASE):

    {"phase": "download", "bytes": B, "total": T}        kagglehub fetching the weights
    {"phase": "model"}                                   building the model, loading weights
    {"phase": "data"}                                    reading the dataset file
    {"phase": "data", "tokenized": K, "total": N}        tokenizing, K of N records done
    {"phase": "restore", "step": S}                      restoring checkpoints/step_S
    {"phase": "compile", "last_seconds": X | null}       compiling the train step; X: the last
                                                         compile of the same shapes here
The panel and `gemma-ft status` show `describe(latest phase)` while the run is STARTING.
Stdlib only.
"""

from __future__ import annotations

from typing import Any

PHASES = ("download", "model", "data", "restore", "compile")


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def fraction(e: dict[str, Any] | None) -> tuple[str, float] | None:
    """(what, done / total) of a phase that counts its progress (the download in bytes, the
    tokenizing in examples); None for the others."""
    if not e:
        return None
    done, total, what = {"download": (e.get("bytes"), e.get("total"), "downloading"),
                         "data": (e.get("tokenized"), e.get("total"), "tokenizing")}.get(e.get("phase"), (0, 0, ""))
    if not isinstance(done, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return None
    return what, min(1.0, max(0.0, done / total))


def describe(e: dict[str, Any] | None) -> str:
    """One line for the latest phase event ("" for none)."""
    if not e:
        return ""
    phase = e.get("phase")
    if phase == "download":
        total = e.get("total")
        pct = f" ({100 * e.get('bytes', 0) / total:.0f}%)" if isinstance(total, (int, float)) and total else ""
        return f"downloading the weights: {_bytes(e.get('bytes'))} of {_bytes(total)}{pct}"
    if phase == "model":
        return "loading the model"
    if phase == "data":
        if "tokenized" in e:
            return f"tokenizing the data: {_count(e.get('tokenized'))} of {_count(e.get('total'))} examples"
        return "reading the data"
    if phase == "restore":
        return f"restoring the checkpoint step_{e.get('step')}"
    if phase == "compile":
        last = e.get("last_seconds")
        guide = f" (last time {last:.0f} s for the same shapes)" if isinstance(last, (int, float)) else \
            " (first time for these shapes)"
        return "compiling the train step" + guide
    return str(phase or "")
