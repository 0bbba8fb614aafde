"""Defaults that follow the model and method (today the learning rate, models.DEFAULT_LR).

When the model or method changes, a field still at the default it was given follows to the
new default, and one the user typed is kept; either way the form says so (`note`), never
silently. "Typed" needs no keystroke tracking: a value that differs from the default last
applied was chosen by someone (typed, or filled from a run's config).
"""

from __future__ import annotations

import math
from typing import Any

from .. import models
from .fmt import number

LABELS = {"learning_rate": "learning rate"}


def _defaults(values: dict[str, Any]) -> dict[str, float | None]:
    return {"learning_rate": models.default_learning_rate(values.get("model", ""), values.get("method", ""))}


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


class ModelDefaults:
    """The defaults last applied to the form, and what a model or method change does to them (see
    the module docstring)."""

    def __init__(self, values: dict[str, Any]):
        self.applied: dict[str, float | None] = {}
        self.sync(values)

    def sync(self, values: dict[str, Any]) -> None:
        """After the form was filled as a whole: the defaults of its model and method are the
        ones applied (a value equal to them follows the next change)."""
        self.applied = _defaults(values)

    def follow(self, values: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """After a model or method change: ({field: new value} to set, the sentence to show)."""
        updates, changed, kept = {}, [], []
        new = _defaults(values)
        what = f"{'LoRA' if values.get('method') == 'lora' else 'full fine-tuning'} on {values.get('model')}"
        for field, default in new.items():
            before = self.applied.get(field)
            if default is None or (before is not None and _same(before, default)):
                continue  # no table default, or the same as before: nothing to say
            current = values.get(field)
            if before is None or _same(current, before):
                updates[field] = default
                changed.append(f"{LABELS[field]} {number(current)} → {number(default)}")
            elif not _same(current, default):
                kept.append(f"kept your {LABELS[field]} {number(current)} (the default for {what} is {number(default)})")
        self.applied = {f: (new[f] if new[f] is not None else self.applied.get(f)) for f in new}
        parts = ([f"Defaults for {what}: " + ", ".join(changed)] if changed else []) + kept
        return updates, "; ".join(parts) + ("." if parts else "")
