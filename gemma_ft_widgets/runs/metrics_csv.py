"""A run's metrics as CSV: one row per step or eval event of metrics.jsonl, one column per
number they carry (step, time, loss, lr, tokens_per_s, ..., eval_loss)."""

from __future__ import annotations

import csv
import io
import os

from .. import contract

KINDS = ("step", "eval")
FIRST = ["event", "step", "time"]


def metrics_csv(run_dir: str) -> str:
    """The CSV text (a header line only when nothing was logged yet)."""
    rows = [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME))
            if e.get("event") in KINDS]
    keys: dict[str, None] = {}
    for e in rows:
        for k, v in e.items():
            if k not in FIRST and (v is None or isinstance(v, (int, float, str))):
                keys.setdefault(k, None)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIRST + sorted(keys), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
