"""8. Multi-process (jax.distributed): tokens/s of 2 trainer processes x 2 forced host devices
against 1 process x 4 devices, at the same global batch.

Both run the real trainer on the same config (tiny, LoRA, batch 8, seq 64, seed 0). The 2 x 2
run is two `python -m gemma_ft_widgets.train` processes with the environment the supervisor
gives them (coordinator on 127.0.0.1, process ids 0 and 1, gloo collectives); process 0 writes
the step events. The two runs take turns of a few seconds, the other frozen (SIGSTOP; both
processes of the 2 x 2 run together), so both are measured under the same load (_common.py).

What the ratio shows on one machine: the cost of crossing processes (gloo all-reduce of the
gradients over loopback TCP instead of within one process's memory, and the per-step
allgather that agrees on a stop, train/distributed.py), not a speed-up: both sides share the
same cores. Losses of the common steps are compared as well.

    python benchmarks/multiprocess.py
    python benchmarks/multiprocess.py --smoke
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

LOSS_TOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--cycles", type=int, default=None, help="turns per run (default 8)")
    p.add_argument("--slice", type=float, default=None, help="seconds per turn (default 3)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args(argv)
    cycles = args.cycles or args.rounds or (2 if args.smoke else 8)
    slice_s = args.slice or (1.0 if args.smoke else 3.0)
    C.print_machine()
    tokens = args.batch * args.seq

    with C.TempDir("mp", args.keep) as root:
        dataset = C.make_dataset(os.path.join(root, "data.jsonl"), n=64)
        layouts = {"1x4": (1, 4), "2x2": (2, 2)}
        run_dirs, procs, logs = {}, {}, []
        port = free_port()
        try:
            for label, (n, k) in layouts.items():
                run_dirs[label] = d = os.path.join(root, label)
                C.write_config(d, model="tiny", dataset=dataset, batch_size=args.batch, max_seq_len=args.seq,
                               max_steps=1_000_000, warmup_steps=0, eval_fraction=0.0, eval_every=1_000_000,
                               checkpoint_every=1_000_000, log_every=1, lora_rank=8, seed=0, learning_rate=1e-3,
                               num_processes=n, allow_cpu=True)
                procs[label] = []
                for pid in range(n):
                    extra = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={k}"}
                    if n > 1:
                        extra.update({"GEMMA_FT_COORDINATOR": f"127.0.0.1:{port}", "GEMMA_FT_NUM_PROCESSES": str(n),
                                      "GEMMA_FT_PROCESS_ID": str(pid)})
                    log = open(os.path.join(root, f"{label}.p{pid}.log"), "w")
                    logs.append(log)
                    procs[label].append(subprocess.Popen(
                        [C.PY, "-m", "gemma_ft_widgets.train", d], stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, env=C.env(**extra)))

            def alive():
                for label, ps in procs.items():
                    for q in ps:
                        if q.poll() is not None:
                            raise RuntimeError(f"{label} process exited with {q.returncode}")

            def ready(label):
                return any(e.get("event") == "step" for e in C.read_events(run_dirs[label]))

            frozen: set[str] = set()

            def freeze_ready():
                alive()
                for label in procs:
                    if label not in frozen and ready(label):
                        C.freeze([q.pid for q in procs[label]])
                        frozen.add(label)
                return len(frozen) == len(procs)

            C.wait_until(freeze_ready, timeout=900, interval=0.1, what="both runs stepping")

            def turn(label):
                return lambda on: (C.thaw if on else C.freeze)([q.pid for q in procs[label]])

            slices = C.alternate({label: turn(label) for label in procs}, slice_s, cycles, alive)
        finally:
            for ps in procs.values():
                C.thaw([q.pid for q in ps])
                for q in ps:
                    if q.poll() is None:
                        q.send_signal(signal.SIGTERM)  # a stop: the 2 x 2 pair agrees on it
            for ps in procs.values():
                for q in ps:
                    try:
                        q.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        q.kill()
                        q.wait()
            for log in logs:
                log.close()
        events = {label: C.read_events(d) for label, d in run_dirs.items()}

    rates = {label: C.sliced_rate(C.step_points(events[label], tokens), slices, label) for label in layouts}
    losses = {label: {e["step"]: e["loss"] for e in events[label] if e.get("event") == "step"} for label in layouts}
    common = sorted(set(losses["1x4"]) & set(losses["2x2"]))
    diff = max((abs(losses["2x2"][s] - losses["1x4"][s]) for s in common[:20]), default=float("nan"))
    ratio = rates["2x2"]["median"] / rates["1x4"]["median"]
    C.table(["layout", "tokens/s (median of turns)", "vs 1x4", "turns"],
            [(label, rates[label]["median"], rates[label]["median"] / rates["1x4"]["median"], rates[label]["turns"])
             for label in layouts],
            title=f"2 processes x 2 devices vs 1 process x 4 devices (tiny, batch {args.batch} x seq {args.seq}; "
                  f"{cycles} cycles of {slice_s} s turns)")
    C.result("mp_speed_2x2_vs_1x4", ratio=ratio,
             note="one machine: the cost of crossing processes (gloo over loopback), no speed-up expected")
    C.result("mp_loss_agreement", value=diff, unit="", target=LOSS_TOL, op="<=",
             note=f"max |loss(2x2) - loss(1x4)| over the first {min(20, len(common))} common steps")
    C.finish(args, {"rates": rates, "common_steps": len(common)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
