"""7. Accelerator: tokens/s, MFU and peak memory of the trainer's LoRA step on a Gemma 3 1B
architecture (random weights, the real shapes), bf16, sequence 1024. Meant for one H200
(bf16 dense peak ~989 TFLOP/s) in under 5 minutes; runs on a CPU with tiny sizes (--smoke).

What runs is the trainer's own step (gemma_ft_widgets.train.step.make_steps, on the model
built by train.models.build_network, LoRA from train.lora, the optimizer from train.optim), fed
random token batches with every position in the loss. Its cross-entropy is chunked and
rematerialised only when the full f32 logits exceed step.CHUNK_BYTES (256 MiB): at the default
size here (8 x 1024 x 262,144 vocab, 8.6 GB of logits) it is; with --smoke it is not.

    frozen base   every leaf of the model's abstract params (jax.eval_shape), filled with
                  N(0, 0.02) in the chosen dtype one leaf at a time (no f32 copy of the model)
    LoRA          rank --rank on every einsum, f32 (as the trainer does)
    timing        compile (timed apart), --warmup steps, then --steps steps, blocked at the end

Figures:
    tokens/s      batch x seq x steps / seconds
    MFU           model FLOPs / step time / peak. Model FLOPs per step, for LoRA (no weight
                  gradients for the frozen base): 4·P·T for the matmuls (forward 2·P·T, input
                  gradients 2·P·T; P counts the tied embedding once, as the logits matmul)
                  + 12·layers·L·heads·head_dim·T for attention scores and values (forward +
                  backward, full L x L as the model computes it, sliding windows included)
                  + 6·P_lora·T, with T = batch x seq tokens.
    HFU           XLA's own FLOP count of the compiled step (cost_analysis: includes the
                  logits recomputed by a chunked loss) / step time / peak, when available.
    peak memory   device.memory_stats()["peak_bytes_in_use"] after the timed steps (None on
                  a CPU); XLA's static plan of the step (memory_analysis) is shown beside it.
    estimate      gemma_ft_widgets.estimate.estimate(config, device) total_bytes, and its
                  error against the measured peak (else against XLA's plan).

    python benchmarks/gpu_mfu.py                         # gemma3-1b, batch 8, seq 1024, bf16
    python benchmarks/gpu_mfu.py --batch 16 --steps 30
    python benchmarks/gpu_mfu.py --smoke                 # tiny model, seq 64, on any device
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

H200_BF16_PEAK = 989e12


def model_flops(spec, params: int, lora_params: int, batch: int, seq: int) -> float:
    tokens = batch * seq
    dense = 4 * params * tokens
    attention = 12 * spec.num_layers * seq * spec.num_heads * spec.head_dim * tokens
    return float(dense + attention + 6 * lora_params * tokens)


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--model", default=None, help="a model table name (default gemma3-1b; --smoke: tiny)")
    p.add_argument("--batch", type=int, default=None, help="default 8 (--smoke 2)")
    p.add_argument("--seq", type=int, default=None, help="default 1024 (--smoke 64)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after compile (default 3; --smoke 1)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK / 1e12,
                   help="device peak for MFU, TFLOP/s (default: H200 bf16 dense, 989)")
    args = p.parse_args(argv)
    name = args.model or ("tiny" if args.smoke else "gemma3-1b")
    batch = args.batch or (2 if args.smoke else 8)
    seq = args.seq or (64 if args.smoke else 1024)
    steps = args.steps or (3 if args.smoke else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    peak = args.peak_tflops * 1e12
    C.print_machine()
    t_begin = time.perf_counter()

    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np

    from gemma_ft_widgets import models as table
    from gemma_ft_widgets.estimate import estimate as estimate_memory
    from gemma_ft_widgets.train import lora, optim, step
    from gemma_ft_widgets.train import models as tmodels

    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', '?')} (x{len(jax.devices())}, using one); "
          f"model {name}, batch {batch} x seq {seq}, {args.dtype}, LoRA rank {args.rank}", flush=True)
    spec = table.MODELS[name]
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    base = tmodels.build_network(spec, dtype)

    t = time.perf_counter()
    tokens0 = jnp.ones((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda: base.init(jax.random.key(0), tokens0)["params"])
    leaves, treedef = jax.tree.flatten(abstract)
    fill = jax.jit(lambda k, shape_dtype: 0.02 * jax.random.normal(k, shape_dtype[0], dtype), static_argnums=1)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    frozen = jax.tree.unflatten(treedef, [fill(k, (tuple(x.shape), None)) for k, x in zip(keys, leaves)])
    jax.block_until_ready(frozen)
    n_params = tmodels.param_count(frozen)
    lora_model = lora.wrap(base, args.rank)
    trainable = lora.init_lora_params(lora_model, 0)
    n_lora = tmodels.param_count(trainable)
    tx, _ = optim.make_optimizer(1e-4, 0, steps + warmup + 1)
    opt_state = jax.jit(tx.init)(trainable)
    init_s = time.perf_counter() - t
    print(f"params: {n_params:,} frozen ({args.dtype}) + {n_lora:,} LoRA (f32), built in {init_s:.1f} s", flush=True)

    softcap = getattr(getattr(base, "config", None), "final_logit_softcap", None)
    chunked = step.supports_chunked_loss(base)
    train_step, _ = step.make_steps(lora_model, tx, True, chunked, softcap)
    rng = np.random.default_rng(0)

    def make_batch(i):
        toks = rng.integers(4, spec.vocab_size, size=(batch, seq + 1), dtype=np.int32)
        return {"input": jnp.asarray(toks[:, :-1]), "target": jnp.asarray(toks[:, 1:]),
                "mask": jnp.ones((batch, seq), jnp.float32)}

    batches = [make_batch(i) for i in range(4)]
    t = time.perf_counter()
    compiled = train_step.lower(trainable, opt_state, frozen, batches[0]).compile()
    compile_s = time.perf_counter() - t
    xla_flops = None
    try:
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        xla_flops = float(ca.get("flops")) if ca and ca.get("flops") else None
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    plan = None
    try:
        m = compiled.memory_analysis()
        plan = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                + m.temp_size_in_bytes)
    except Exception:  # noqa: BLE001
        pass
    print(f"compiled in {compile_s:.1f} s (chunked loss: {chunked})", flush=True)

    losses = []
    for i in range(warmup):
        trainable, opt_state, metrics = compiled(trainable, opt_state, frozen, batches[i % len(batches)])
        losses.append(metrics["loss"])
    jax.block_until_ready((trainable, opt_state))
    t = time.perf_counter()
    for i in range(steps):
        trainable, opt_state, metrics = compiled(trainable, opt_state, frozen, batches[i % len(batches)])
    jax.block_until_ready((trainable, opt_state, metrics))
    seconds = time.perf_counter() - t
    step_s = seconds / steps
    final_loss = float(metrics["loss"])
    tokens_per_s = batch * seq * steps / seconds
    mflops = model_flops(spec, n_params, n_lora, batch, seq)
    mfu = mflops / step_s / peak
    hfu = xla_flops / step_s / peak if xla_flops else None
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001
        pass
    measured_peak = int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
    limit = int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None
    device_kind = "gpu" if dev.platform == "gpu" else ("tpu" if dev.platform == "tpu" else "cpu")
    e = estimate_memory({"model": name, "method": "lora", "lora_rank": args.rank, "batch_size": batch,
                                 "max_seq_len": seq, "dtype": args.dtype}, device=device_kind)
    against = measured_peak or plan
    err = (e.total_bytes - against) / against if against else None
    total_s = time.perf_counter() - t_begin

    C.table(["figure", "value"], [
        ("device", f"{dev.platform} {getattr(dev, 'device_kind', '?')}"),
        ("model / batch x seq / dtype", f"{name} / {batch} x {seq} / {args.dtype}"),
        ("params frozen + LoRA", f"{n_params:,} + {n_lora:,}"),
        ("compile (s)", compile_s),
        ("step time (s)", step_s),
        ("tokens/s", tokens_per_s),
        ("model FLOPs per step", f"{mflops:.4g}"),
        ("XLA FLOPs per step", f"{xla_flops:.4g}" if xla_flops else "-"),
        (f"MFU vs {args.peak_tflops:g} TFLOP/s", f"{100 * mfu:.2f}%"),
        ("HFU (XLA FLOPs)", f"{100 * hfu:.2f}%" if hfu is not None else "-"),
        ("peak device memory (memory_stats)", C.fmt(measured_peak / 1e9) + " GB" if measured_peak else "n/a"),
        ("device memory limit", C.fmt(limit / 1e9) + " GB" if limit else "n/a"),
        ("XLA memory plan of the step", C.fmt(plan / 1e9) + " GB" if plan else "-"),
        ("estimate.estimate total", C.fmt(e.total_bytes / 1e9) + " GB"),
        ("estimate error vs " + ("measured peak" if measured_peak else "XLA plan"),
         f"{100 * err:+.1f}%" if err is not None else "-"),
        ("loss after the timed steps", final_loss),
        ("whole benchmark (s)", total_s),
    ], title="Accelerator: the trainer's LoRA step")
    print(f"estimate: {e.summary()}")
    if dev.platform == "cpu":
        print("(CPU: MFU against an accelerator's peak means nothing here; this run checks the script)")
    C.result("accel_tokens_per_s", value=tokens_per_s, unit="tok/s", note=f"{name} {batch}x{seq} {args.dtype}")
    C.result("accel_mfu", value=mfu, unit="", note=f"vs {args.peak_tflops:g} TFLOP/s")
    C.result("accel_peak_mem_gb", value=(measured_peak / 1e9) if measured_peak else None, unit="GB",
             note="memory_stats peak" if measured_peak else "no memory_stats on this backend")
    C.result("accel_estimate_error", value=err, unit="",
             note="(estimate - " + ("measured peak" if measured_peak else "XLA plan") + ") / it")
    C.finish(args, {"device": f"{dev.platform} {getattr(dev, 'device_kind', '?')}", "model": name, "batch": batch,
                    "seq": seq, "dtype": args.dtype, "compile_s": compile_s, "step_s": step_s,
                    "tokens_per_s": tokens_per_s, "model_flops": mflops, "xla_flops": xla_flops, "mfu": mfu,
                    "hfu": hfu, "peak_bytes": measured_peak, "plan_bytes": plan,
                    "estimate_bytes": e.total_bytes, "estimate_error": err, "total_s": total_s})
    return 0


if __name__ == "__main__":
    sys.exit(main())
