"""A run's metrics as CSV: one row per step or eval event of metrics.jsonl, one column per
value they carry (step, time, loss, lr, tokens_per_s, ..., eval_loss). Streamed in blocks,
two passes (the columns, then the rows), so a million-step run is never held in memory."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from typing import IO

from .. import contract
from .metrics import MetricsBlocks, _parse_line

KINDS = ("step", "eval")
FIRST = ["event", "step", "time"]


def _events(run_dir: str) -> Iterator[dict]:
    for block in MetricsBlocks(os.path.join(run_dir, contract.METRICS_NAME)).read():
        for line in block.splitlines():
            e = _parse_line(line) if line.strip() else None
            if e is not None and e.get("event") in KINDS:
                yield e


def write_metrics_csv(run_dir: str, out: IO[str]) -> None:
    """Write the run's step and eval events to `out` as CSV: event, step, time first, then every scalar key they carry,
    sorted."""
    keys: dict[str, None] = {}
    for e in _events(run_dir):
        for k, v in e.items():
            if k not in FIRST and (v is None or isinstance(v, (int, float, str))):
                keys.setdefault(k, None)
    writer = csv.DictWriter(out, fieldnames=FIRST + sorted(keys), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for e in _events(run_dir):
        writer.writerow(e)


def metrics_csv(run_dir: str) -> str:
    """The CSV text (a header line only when nothing was logged yet)."""
    out = io.StringIO()
    write_metrics_csv(run_dir, out)
    return out.getvalue()


def save_metrics_csv(run_dir: str) -> str:
    """Write the CSV into the run folder (contract.METRICS_CSV_NAME, replaced atomically);
    its path."""
    path = os.path.join(run_dir, contract.METRICS_CSV_NAME)
    contract.atomic_write_text(path, metrics_csv(run_dir), mode=0o644)
    return path
