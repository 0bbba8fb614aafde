"""The curves' parse of metrics.jsonl: msgspec's typed decoder (ui/columns.py today) against the
hand-written numpy parser it replaced (ui/columns.py at BASELINE, read from git history).

Both parse the same file of N step lines (an eval every 50, as refresh_cost.py writes them),
alternated A B A B in one process. Checked: both give the same loss column. Target (#18): the
library within 1.5x of the hand parser, median msgspec / median hand <= 1.5.

    python benchmarks/columns_parser.py                 # 1,000,000 lines
    python benchmarks/columns_parser.py --lines 200000 --rounds 5
    python benchmarks/columns_parser.py --smoke
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import refresh_cost  # noqa: E402

BASELINE = "b4c8ab5"  # the last commit with the hand-written parser
TARGET = 1.5


def hand_parser_module():
    """ui/columns.py as it was at BASELINE, imported under another name; None without that
    history (a shallow clone)."""
    got = subprocess.run(["git", "show", f"{BASELINE}:gemma_ft_widgets/ui/columns.py"], cwd=C.REPO,
                         capture_output=True, text=True)
    if got.returncode != 0:
        print(f"no git history with {BASELINE} here ({got.stderr.strip()}): msgspec alone")
        return None
    source = got.stdout
    path = os.path.join(tempfile.mkdtemp(prefix="gft-hand-parser-"), "hand_columns.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("hand_columns", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--lines", type=int, default=None)
    args = p.parse_args()
    lines = args.lines or (20_000 if args.smoke else 1_000_000)
    rounds = args.rounds or (2 if args.smoke else 3)
    C.print_machine()

    from gemma_ft_widgets.runs.metrics import MetricsBlocks
    from gemma_ft_widgets.ui import columns

    hand = hand_parser_module()
    workspace = tempfile.mkdtemp(prefix="gft-parser-")
    run_dir = refresh_cost.make_run(workspace, lines)
    path = os.path.join(run_dir, "metrics.jsonl")
    print(f"{lines:,} step lines, {os.path.getsize(path) / 1e6:.0f} MB")

    parsers = {"msgspec": columns.BlockParser}
    if hand is not None:
        parsers["hand"] = hand.BlockParser
    times: dict[str, list[float]] = {k: [] for k in parsers}
    losses = {}
    for _ in range(rounds):
        for name, make in parsers.items():
            gc.collect()
            t0 = time.perf_counter()
            batch = make().parse(MetricsBlocks(path).read())
            times[name].append(time.perf_counter() - t0)
            losses[name] = batch.steps["loss"]
    if hand is not None:
        np.testing.assert_array_equal(losses["msgspec"], losses["hand"])
    C.table(["parser", "median s", "spread"],
             [[k, C.fmt(C.median(v)), C.spread(v)] for k, v in times.items()])
    C.result("columns_parser_msgspec_vs_hand",
             ratio=C.median(times["msgspec"]) / C.median(times["hand"]) if hand is not None else None,
             target=TARGET, op="<=", note=f"{lines:,} lines, {rounds} rounds alternated")
    C.finish(args)
    if not args.keep:
        import shutil
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
