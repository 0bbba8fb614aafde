"""12. The playground's Generate: cold (a new sampling process per prompt, `RunManager.sample`)
against warm (one process kept per run and checkpoint, `WarmSamplers.generate`), side by side.

A tiny LoRA run is trained first by the real trainer (through RunManager, as the panel starts
it). Then, in rounds, A B A B ...:

  A  cold   RunManager.sample(run, prompt): python starts, imports jax, loads the model and
            the checkpoint, compiles, samples, exits.
  B  warm   the same prompt to the warm sampler, which stayed up since the round before (the
            first round starts it: reported apart as "warm, first Generate").

Also reported: the first Generate with other sampling settings (temperature 0.7, top-p 0.9:
the sampler compiles once per distinct setting, then that too is warm). Times are wall clock
around the kernel-side call, greedy, 32 new tokens. Target: the warm (second) Generate on tiny
<= 1 s. This process never imports jax.

    python benchmarks/warm_playground.py
    python benchmarks/warm_playground.py --rounds 5
    python benchmarks/warm_playground.py --smoke
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TARGET_S = 1.0
PROMPT = "What is the secret word?"
NEW_TOKENS = 32


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    rounds = args.rounds or (1 if args.smoke else 4)
    C.print_machine()
    sys.path.insert(0, str(C.REPO))  # this checkout's package (its subprocesses get it through package_env)
    from gemma_ft_widgets import contract
    from gemma_ft_widgets.config import sample_dataset_path
    from gemma_ft_widgets.runs import RunManager
    from gemma_ft_widgets.runs.warm_sampler import WarmSamplers

    os.environ.pop(contract.TRAINER_ENV, None)  # the real trainer
    tmp = tempfile.mkdtemp(prefix="bench-warm-")
    m = RunManager(os.path.join(tmp, "ws"))
    t0 = time.perf_counter()
    run = m.start({"model": "tiny", "dataset": sample_dataset_path(), "method": "lora",
                   "max_steps": 2 if args.smoke else 20, "learning_rate": 3e-2, "warmup_steps": 0,
                   "eval_fraction": 0.0, "checkpoint_every": 100})
    st = m.wait(run, timeout=1800)
    assert st.state.value == "FINISHED", st.reason
    print(f"trained {run.name} in {time.perf_counter() - t0:.1f} s", flush=True)

    pool = WarmSamplers(m.workspace)
    cold, warm, texts = [], [], set()
    first_warm = settings_first = settings_warm = None
    try:
        for r in range(rounds + 1):
            t = time.perf_counter()
            texts.add(m.sample(run, PROMPT, max_new_tokens=NEW_TOKENS)["text"])
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = pool.generate(run.run_dir, PROMPT, max_new_tokens=NEW_TOKENS)
            (warm.append if r else lambda x: None)(time.perf_counter() - t)
            if r == 0:
                first_warm = time.perf_counter() - t
                pid = out["pid"]
            assert out["pid"] == pid, "the warm sampler was restarted"
            texts.add(out["text"])
            print(f"round {r}: cold {cold[-1]:.2f} s, warm {warm[-1] if r else first_warm:.2f} s", flush=True)
        t = time.perf_counter()
        pool.generate(run.run_dir, PROMPT, max_new_tokens=NEW_TOKENS, temperature=0.7, top_p=0.9, seed=1)
        settings_first = time.perf_counter() - t
        t = time.perf_counter()
        pool.generate(run.run_dir, PROMPT, max_new_tokens=NEW_TOKENS, temperature=0.7, top_p=0.9, seed=2)
        settings_warm = time.perf_counter() - t
    finally:
        pool.close()
    assert len(texts) == 1, f"cold and warm greedy answers differ: {texts}"
    C.table(["Generate", "median s", "spread", "n"], [
        ["cold: new process (RunManager.sample)", C.median(cold), C.spread(cold), len(cold)],
        ["warm, first (starts the process)", first_warm, "-", 1],
        ["warm, second and later", C.median(warm), C.spread(warm), len(warm)],
        ["warm, first with temperature 0.7 / top-p 0.9", settings_first, "-", 1],
        ["warm, again with those settings", settings_warm, "-", 1],
    ], title=f"tiny, LoRA checkpoint, greedy, {NEW_TOKENS} new tokens")
    C.result("warm_playground_second_generate", value=round(C.median(warm), 3), unit="s", target=TARGET_S,
             op="<=")
    C.result("warm_playground_cold_over_warm", ratio=round(C.median(cold) / C.median(warm), 1),
             note="cold Generate / warm Generate, medians")
    C.result("warm_playground_new_settings_first", value=round(settings_first, 3), unit="s",
             note="compiles once per distinct sampling setting")
    C.finish(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
