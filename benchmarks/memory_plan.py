"""XLA's memory plan of the trainer's LoRA step, with and without `remat: "block"`.

Compiles the trainer's own train step (train.step.make_steps on train.models.build_network,
LoRA from train.lora, the optimizer from train.optim, remat from train.remat) for abstract
arguments (jax.ShapeDtypeStruct: no weights are allocated, random or real) and reads
`compiled.memory_analysis()`, the same figures the trainer records in its `compile` event:

    arguments   frozen base + adapters + optimizer state + batch
    temp        XLA's scratch for the step: activations kept for the backward pass, logits, ...
    plan        arguments + outputs - aliased (donated) + temp

The plan is the backend's: a CPU plan need not match a GPU's (other fusions, no memory-saving
scheduler), so the ratio is reported for the backend it ran on.

    python benchmarks/memory_plan.py                    # gemma3-1b, LoRA 4 x 512, bf16
    python benchmarks/memory_plan.py --model gemma3-270m --batch 8 --seq 1024
    python benchmarks/memory_plan.py --smoke            # tiny
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def plan(spec, batch: int, seq: int, rank: int, dtype, remat_mode: str) -> dict:
    import warnings

    import jax
    import jax.numpy as jnp

    from gemma_ft_widgets.train import lora, optim, remat, step
    from gemma_ft_widgets.train import models as tmodels
    from gemma_ft_widgets.train.plan import memory_analysis

    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    base = remat.apply(tmodels.build_network(spec, dtype), remat_mode)
    frozen = jax.eval_shape(lambda: tmodels.init_params_shape(base))
    frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), frozen)
    lora_model = lora.wrap(base, rank, dtype=dtype)
    trainable = jax.eval_shape(lambda: lora.init_lora_params(lora_model, 0))
    tx, _ = optim.make_optimizer(1e-4, 0, 10)
    opt_state = jax.eval_shape(tx.init, trainable)
    softcap = getattr(base.config, "final_logit_softcap", None)
    train_step, _ = step.make_steps(lora_model, tx, True, step.supports_chunked_loss(base), softcap,
                                    compute_dtype=dtype)
    batch_like = {"input": jax.ShapeDtypeStruct((batch, seq), jnp.int32),
                  "target": jax.ShapeDtypeStruct((batch, seq), jnp.int32),
                  "mask": jax.ShapeDtypeStruct((batch, seq), jnp.float32)}
    t = time.perf_counter()
    compiled = train_step.lower(trainable, opt_state, frozen, batch_like).compile()
    mem = memory_analysis(compiled).get("memory", {})
    return {"compile_s": time.perf_counter() - t, **mem}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--model", default=None, help="a model table name (default gemma3-1b; --smoke: tiny)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=None, help="default 512 (--smoke 64)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = p.parse_args(argv)
    name = args.model or ("tiny" if args.smoke else "gemma3-1b")
    seq = args.seq or (64 if args.smoke else 512)
    C.print_machine()

    import jax
    import jax.numpy as jnp

    from gemma_ft_widgets import models as table

    spec = table.MODELS[name]
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    backend = jax.default_backend()
    print(f"backend {backend}; model {name}, LoRA rank {args.rank}, batch {args.batch} x seq {seq}, "
          f"{args.dtype}", flush=True)
    plans = {mode: plan(spec, args.batch, seq, args.rank, dtype, mode) for mode in ("none", "block")}

    def gb(x):
        return C.fmt(x / 1e9) + " GB" if x is not None else "-"

    rows = [(mode, gb(m.get("argument_size_in_bytes")), gb(m.get("temp_size_in_bytes")),
             gb(m.get("peak_estimate_bytes")), C.fmt(m["compile_s"])) for mode, m in plans.items()]
    C.table(["remat", "arguments", "temp", "plan", "compile (s)"], rows,
            title=f"XLA memory plan ({backend}) of the LoRA step: {name} {args.batch} x {seq}")
    none, block = plans["none"], plans["block"]
    temp_ratio = (block["temp_size_in_bytes"] / none["temp_size_in_bytes"]
                  if none.get("temp_size_in_bytes") else None)
    plan_ratio = (block["peak_estimate_bytes"] / none["peak_estimate_bytes"]
                  if none.get("peak_estimate_bytes") else None)
    C.result("remat_temp_vs_none", ratio=temp_ratio, target=None,
             note=f"{backend} plan, {name} {args.batch}x{seq}: temp bytes with remat / without")
    C.result("remat_plan_vs_none", ratio=plan_ratio, target=None,
             note=f"{backend} plan: whole step with remat / without")
    C.finish(args, {"backend": backend, "model": name, "batch": args.batch, "seq": seq,
                    "dtype": args.dtype, "plans": plans})
    return 0


if __name__ == "__main__":
    sys.exit(main())
