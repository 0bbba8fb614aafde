"""6. Data parallel: tokens/s and loss agreement of the real trainer on 1, 2 and 4 forced host
devices.

One trainer process per device count N, each with
XLA_FLAGS=--xla_force_host_platform_device_count=N in its environment (so it is set before jax
is imported), all on the same config (tiny, batch 8, seq 64, seed 0). The trainer builds its
1-D "data" mesh over every device it sees and splits the batch over it; params are
replicated. The processes run in turns of a few seconds, the others frozen (SIGSTOP), so
their tokens/s are measured under the same load (see _common.py).

Checked: the device count each trainer reports in its log; the per-step losses of N = 2 and 4
against N = 1 (same seed, same batches). The first step's loss and the first 20 steps should
agree to float rounding (another reduction order); over thousands of steps those rounding
differences compound, so the drift over all common steps is reported apart, without a target.

On this machine (2 physical cores) no speed-up is expected: forced host devices share the
same cores, and XLA already uses both for one device. The figures check the mechanism.

    python benchmarks/data_parallel.py
    python benchmarks/data_parallel.py --devices 1,2,4,8
    python benchmarks/data_parallel.py --smoke           # N = 1, 2, a few turns
"""

from __future__ import annotations

import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

LOSS_TOL = 1e-5  # max |loss(N) - loss(1)| / loss(1) over the first EARLY steps
EARLY = 20  # rounding differences (another reduction order) then compound as training goes on


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--devices", default=None, help="comma list of device counts (default 1,2,4; --smoke 1,2)")
    p.add_argument("--cycles", type=int, default=None, help="turns per process (default 8)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default 2)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args(argv)
    counts = [int(x) for x in (args.devices or ("1,2" if args.smoke else "1,2,4")).split(",")]
    cycles = args.cycles or args.rounds or (2 if args.smoke else 8)
    slice_s = args.slice or (0.5 if args.smoke else 2.0)
    C.print_machine()
    tokens = args.batch * args.seq

    with C.TempDir("dp", args.keep) as root:
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        run_dirs, specs = {}, {}
        for n in counts:
            label = f"N={n}"
            run_dirs[label] = d = os.path.join(root, f"dp{n}")
            C.write_config(d, model="tiny", dataset=dataset, batch_size=args.batch, max_seq_len=args.seq,
                           max_steps=1_000_000, warmup_steps=0, eval_fraction=0.0, eval_every=1_000_000,
                           checkpoint_every=1_000_000, log_every=1, lora_rank=8, seed=0, learning_rate=1e-3)
            specs[label] = {
                "cmd": [C.PY, "-m", "gemma_ft_widgets.train", d],
                "env": {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"},
                "ready": (lambda d=d: any(e.get("event") == "step" for e in C.read_events(d))),
                "stop": signal.SIGTERM,
            }
        slices = C.sliced_processes(specs, slice_s, cycles, root)
        logs = {label: open(os.path.join(root, f"{label}.log")).read() for label in specs}
        events = {label: C.read_events(d) for label, d in run_dirs.items()}

    rates, losses, seen = {}, {}, {}
    for label in specs:
        rates[label] = C.sliced_rate(C.step_points(events[label], tokens), slices, label)
        losses[label] = {e["step"]: e["loss"] for e in events[label] if e.get("event") == "step"}
        m = re.search(r"(\d+) cpu device", logs[label])
        seen[label] = int(m.group(1)) if m else None
    base = f"N={counts[0]}"
    common = set(losses[base])
    for label in specs:
        common &= set(losses[label])
    rows, agreement, early, first = [], {}, {}, {}
    steps = sorted(common)

    def rel(label, s):
        return abs(losses[label][s] - losses[base][s]) / max(abs(losses[base][s]), 1e-12)

    for label in specs:
        diffs = [rel(label, s) for s in steps]
        agreement[label] = max(diffs) if diffs else float("nan")
        early[label] = max(diffs[:EARLY]) if diffs else float("nan")
        first[label] = diffs[0] if diffs else float("nan")
        rows.append((label, seen[label], rates[label]["median"], rates[label]["median"] / rates[base]["median"],
                     first[label], early[label], agreement[label], len(common), rates[label]["turns"]))
    C.table(["devices", "trainer saw", "tokens/s (median of turns)", f"vs {base}", "rel. loss diff step 1",
             f"max, first {EARLY} steps", "max, all common steps", "common steps", "turns"], rows,
            title=f"Data parallel on forced host devices (tiny, batch {args.batch} x seq {args.seq}; "
                  f"{cycles} cycles of {slice_s} s turns)")
    print("2 physical cores: no speed-up expected; this checks the mechanism (devices seen, losses agree).")
    for n in counts:
        label = f"N={n}"
        C.result(f"dp_devices_seen_{n}", value=seen[label] if seen[label] is not None else -1, unit="",
                 target=None, note=f"expected {n}")
        if label != base:
            C.result(f"dp_speed_{n}_vs_{counts[0]}", ratio=rates[label]["median"] / rates[base]["median"],
                     note="no speed-up expected on 2 cores")
            C.result(f"dp_loss_agreement_{n}", value=early[label], unit="", target=LOSS_TOL, op="<=",
                     note=f"max relative loss difference over the first {min(EARLY, len(common))} steps")
            C.result(f"dp_loss_drift_{n}", value=agreement[label], unit="",
                     note=f"max relative loss difference over all {len(common)} common steps")
    C.finish(args, {"rates": {k: {kk: vv for kk, vv in v.items()} for k, v in rates.items()},
                    "agreement": agreement, "agreement_early": early, "agreement_first": first,
                    "devices_seen": seen, "common_steps": len(common)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
