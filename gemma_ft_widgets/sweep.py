"""Sweeps: a grid over config fields becomes a list of validated configs (no jax).

    points(base, parse_grid(["learning_rate=1e-4,3e-4", "lora_rank=4,8"]))  # 4 configs

Every point is validated before any is queued, and every problem of every point is reported
at once; values are read as JSON (`3e-4`, `8`, `true`), else taken as text (`lora`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

from .config import ConfigError, FieldError, TrainingConfig

MAX_POINTS = 64  # more needs an explicit yes: a typo in a grid should not queue a week of runs


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """["field=v1,v2", ...] -> {field: [v1, v2]}; raises ConfigError naming each bad item."""
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    grid: dict[str, list[Any]] = {}
    errors = []
    for item in items:
        field, sep, values = item.partition("=")
        field = field.strip()
        if not sep or not field or not values.strip():
            errors.append(FieldError("grid", f"{item!r} is not FIELD=VALUE[,VALUE...]"))
            continue
        if field not in names:
            errors.append(FieldError(field, "unknown field"))
            continue
        if field in grid:
            errors.append(FieldError(field, "given twice in the grid"))
            continue
        grid[field] = [_value(v.strip()) for v in values.split(",") if v.strip()]
    if errors:
        raise ConfigError(errors)
    return grid


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def size(grid: dict[str, list[Any]]) -> int:
    """The number of points of a grid (the product of its value counts)."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def points(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[tuple[dict[str, Any], TrainingConfig]]:
    """(the point's grid values, its validated config) for every point of the grid.

    Raises ConfigError listing every point's problems, each field prefixed by the point."""
    fields = list(grid)
    out, errors = [], []
    for combo in itertools.product(*(grid[f] for f in fields)):
        point = dict(zip(fields, combo))
        try:
            out.append((point, TrainingConfig.from_dict({**base, **point})))
        except ConfigError as e:
            label = ", ".join(f"{k}={v}" for k, v in point.items())
            errors += [FieldError(f"[{label}] {err.field}", err.message) for err in e.errors]
    if errors:
        raise ConfigError(errors)
    return out


def point_name(prefix: str, point: dict[str, Any]) -> str:
    """A run-name-safe label for a point: `lr3e-4-rank8` style, from the fields' values."""
    short = {"learning_rate": "lr", "lora_rank": "r", "batch_size": "bs", "max_seq_len": "len",
             "max_steps": "steps", "warmup_steps": "wu"}
    parts = [f"{short.get(k, k)}{v}" for k, v in point.items()]
    name = "-".join([prefix] + parts)
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-")
