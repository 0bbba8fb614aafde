"""The estimate (estimate.py) against XLA's memory plan of the real train step, on this
machine's backend, for every quantization x remat combination of the small models.

tiny: the trainer's own setup and compile (train/loop.py Trainer), LoRA, f32 on the CPU,
quantization none / int8 / int4 x remat none / block. gemma3-270m (--with-270m): the
abstract-argument step of benchmarks/memory_plan.py (nothing allocated; quantization is not
built there), remat none / block. The plan is arguments + outputs - aliased + temp
(`compiled.memory_analysis()`); estimate / plan is printed per row. Not a timed test: the
CPU plan need not match a GPU's (docs/estimate.md).

    python benchmarks/estimate_vs_plan.py [--batch 8 --seq 128] [--with-270m]
    python benchmarks/estimate_vs_plan.py --smoke     # tiny int8 + remat, 2 x 32
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def tiny_plan(quant: str, remat: str, batch: int, seq: int) -> tuple[int, int]:
    """(XLA plan bytes, estimate bytes) of tiny LoRA on the real trainer's compiled step."""
    from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
    from gemma_ft_widgets.estimate import estimate
    from gemma_ft_widgets.train import loop

    cfg = TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path(), "method": "lora",
                                    "batch_size": batch, "max_seq_len": seq, "max_steps": 20,
                                    "quantization": quant, "remat": remat})
    with tempfile.TemporaryDirectory() as tmp:
        tr = loop.Trainer(tmp, cfg, log=lambda m: None)
        tr.setup()
        tr.compile()
        plan = tr.memory_analysis["memory"]["peak_estimate_bytes"]
        tr.close()
    return plan, estimate(cfg, device="cpu").total_bytes


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--with-270m", action="store_true", help="also gemma3-270m LoRA 2 x 512 (about a minute a compile)")
    p.add_argument("--abstract", nargs="*", default=[], metavar="MODEL",
                   help="also these table models (e.g. gemma3-1b gemma3-4b), LoRA 2 x 512 f32 without remat, on "
                        "abstract arguments (nothing allocated; minutes a compile)")
    args = p.parse_args(argv)
    batch, seq = (2, 32) if args.smoke else (args.batch, args.seq)
    C.print_machine()

    import jax

    backend = jax.default_backend()
    combos = [("int8", "block")] if args.smoke else \
        [(q, r) for q in ("none", "int8", "int4") for r in ("none", "block")]
    rows, data = [], []
    for quant, remat in combos:
        plan, est = tiny_plan(quant, remat, batch, seq)
        rows.append(("tiny", quant, remat, f"{batch} x {seq}", C.fmt(plan / 1e6) + " MB", C.fmt(est / 1e6) + " MB",
                     C.fmt(est / plan)))
        data.append({"model": "tiny", "quantization": quant, "remat": remat, "plan": plan, "estimate": est})
        C.result(f"tiny_{quant}_{remat}_estimate_vs_plan", ratio=est / plan, target=None,
                 note=f"{backend} plan, LoRA {batch}x{seq} f32")
    if args.with_270m and not args.smoke:
        import jax.numpy as jnp
        from memory_plan import plan as abstract_plan

        from gemma_ft_widgets import models
        from gemma_ft_widgets.estimate import estimate

        for remat in ("none", "block"):
            m = abstract_plan(models.MODELS["gemma3-270m"], 2, 512, 8, jnp.float32, remat)
            est = estimate({"model": "gemma3-270m", "batch_size": 2, "max_seq_len": 512, "remat": remat,
                            "dtype": "float32"}, device="cpu").total_bytes
            plan = m["peak_estimate_bytes"]
            rows.append(("gemma3-270m", "none", remat, "2 x 512", C.fmt(plan / 1e9) + " GB", C.fmt(est / 1e9) + " GB",
                         C.fmt(est / plan)))
            data.append({"model": "gemma3-270m", "quantization": "none", "remat": remat, "plan": plan, "estimate": est})
            C.result(f"gemma3-270m_none_{remat}_estimate_vs_plan", ratio=est / plan, target=None,
                     note=f"{backend} plan, LoRA 2x512 f32")
    for name in [] if args.smoke else args.abstract:
        import jax.numpy as jnp
        from memory_plan import plan as abstract_plan

        from gemma_ft_widgets import models
        from gemma_ft_widgets.estimate import estimate

        m = abstract_plan(models.MODELS[name], 2, 512, 8, jnp.float32, "none")  # bf16: the CPU upcasts dots
        est = estimate({"model": name, "batch_size": 2, "max_seq_len": 512, "remat": "none",
                        "dtype": "float32"}, device="cpu").total_bytes
        plan = m["peak_estimate_bytes"]
        rows.append((name, "none", "none", "2 x 512", C.fmt(plan / 1e9) + " GB", C.fmt(est / 1e9) + " GB",
                     C.fmt(est / plan)))
        data.append({"model": name, "quantization": "none", "remat": "none", "plan": plan, "estimate": est})
        C.result(f"{name}_none_none_estimate_vs_plan", ratio=est / plan, target=None,
                 note=f"{backend} plan, LoRA 2x512 f32, abstract arguments")
    C.table(["model", "quantization", "remat", "B x S", "XLA plan", "estimate", "estimate / plan"], rows,
            title=f"the estimate against XLA's plan ({backend})")
    C.finish(args, {"backend": backend, "rows": data})
    return 0


if __name__ == "__main__":
    sys.exit(main())
