"""The `sample` events of a run (greedy completions at each eval, train/eval_samples.py):
read from metrics.jsonl, grouped by step, newest first, as text for `gemma-ft logs --stream
samples`. Stdlib only (the panel's table, ui/samples_view.py, uses the same reading)."""

from __future__ import annotations

import os
from typing import Any

from .. import contract

STREAM = "samples"  # the name `gemma-ft logs --stream` knows them by


def is_sample(e: dict[str, Any]) -> bool:
    """Whether a metrics event is a sample event with an integer step."""
    return e.get("event") == contract.EVENT_SAMPLE and isinstance(e.get("step"), int)


def read_samples(run_dir: str) -> list[dict[str, Any]]:
    """Every sample event of the run, in the order written."""
    return [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)) if is_sample(e)]


def newest_first(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By step, newest first; the prompts of one step keep their order."""
    order = {id(e): i for i, e in enumerate(samples)}
    return sorted(samples, key=lambda e: (-e["step"], order[id(e)]))


def format_sample(e: dict[str, Any]) -> str:
    """One sample as a few lines of text."""
    lines = [f"step {e.get('step')}", f"  prompt:     {_one_line(e.get('prompt'))}"]
    if e.get("reference"):
        lines.append(f"  reference:  {_one_line(e.get('reference'))}")
    lines.append(f"  completion: {_one_line(e.get('completion'))}")
    return "\n".join(lines)


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split()) or "(empty)"


def print_samples(run_dir: str, lines: int, follow: bool = False, active=lambda: False, out=None) -> int:
    """`gemma-ft logs --stream samples`: the samples of the last `lines` steps' worth of
    events as written (oldest first, like a log); with `follow`, then each new one until the
    run is no longer active."""
    import sys
    import time

    out = out or sys.stdout
    reader = contract.JsonlTail(os.path.join(run_dir, contract.METRICS_NAME))
    shown = [e for e in reader.read_new() if is_sample(e)][-max(lines, 0):] if lines else []
    for e in shown:
        print(format_sample(e), file=out, flush=True)
    if not shown and not follow:
        print("no samples yet: they are logged at each eval (eval_every) unless sample_tokens is 0",
              file=sys.stderr)
    try:
        while follow:
            still = active()
            for e in reader.read_new():
                if is_sample(e):
                    print(format_sample(e), file=out, flush=True)
            if not still:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return 0
