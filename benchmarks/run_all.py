"""Run every benchmark in turn (full sizes unless --smoke), keep each one's output and JSON in
a folder, and print every RESULT line at the end.

    python benchmarks/run_all.py --out bench-results
    python benchmarks/run_all.py --smoke --out /tmp/bench-smoke
    python benchmarks/run_all.py --only refresh_cost,import_attach

gpu_mfu runs only with --gpu (it is meant for an accelerator; on a CPU use its --smoke).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ORDER = ("trainer_overhead", "monitoring_overhead", "refresh_cost", "columns_parser", "import_attach", "start_stop",
         "data_parallel", "multiprocess", "extension_polling", "warm_playground", "eval_samples",
         "gpu_mfu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-results", help="folder for <name>.txt and <name>.json")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--only", default=None, help="comma list of benchmark names")
    p.add_argument("--gpu", action="store_true", help="also run gpu_mfu (full size)")
    args = p.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else ORDER)]
    if "gpu_mfu" in names and not (args.gpu or args.smoke or args.only):
        names.remove("gpu_mfu")
    os.makedirs(args.out, exist_ok=True)
    C.print_machine()
    lines, failed = [], []
    for name in names:
        t = time.time()
        cmd = [C.PY, str(C.BENCH_DIR / f"{name}.py"), "--json", os.path.join(args.out, f"{name}.json")]
        if args.smoke:
            cmd.append("--smoke")
        elif name == "trainer_overhead":
            cmd.append("--profile")  # where the loop's time goes, for the record
        print(f"== {name}", flush=True)
        with open(os.path.join(args.out, f"{name}.txt"), "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=C.env())
        text = open(os.path.join(args.out, f"{name}.txt")).read()
        found = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        lines += found
        print(f"   {'ok' if proc.returncode == 0 else f'FAILED ({proc.returncode})'} in {time.time() - t:.0f} s, "
              f"{len(found)} RESULT lines", flush=True)
        if proc.returncode:
            failed.append(name)
    print()
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
