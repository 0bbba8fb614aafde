"""Quantized LoRA base: parameter bytes and host memory of a run, int8 / int4 against bf16.

1. Base parameter bytes of gemma3-270m (random weights, the real architecture) as the trainer
   holds them: bf16, then int8 and int4 (train/quantize.py: every einsum weight as int with
   per-channel scales; the embedding and norms stay bf16). int4 is counted at 4 bits, as an
   accelerator stores it; `nbytes` on this host is shown beside it.
2. Peak host RSS of a real trainer run (train/loop.py, LoRA rank 8, bf16, a few steps on the
   sample dataset) of gemma3-270m with an int4 base against the same run unquantized. The two
   runs are subprocesses, alternated (A B A B); each reports its ru_maxrss and its RSS after the
   last step. The weights are random (no download): the child replaces `models.load_model` by
   a random initialisation of the real architecture, with the tiny tokenizer.

    python benchmarks/quantized_memory.py              # gemma3-270m, 2 rounds, 3 steps each
    python benchmarks/quantized_memory.py --smoke      # tiny, 1 round
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def child(model: str, quantization: str, steps: int, workdir: str) -> None:
    """One trainer run in this process; prints one JSON line."""
    import psutil

    from gemma_ft_widgets import contract
    from gemma_ft_widgets import models as table
    from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
    from gemma_ft_widgets.train import loop, models

    def random_weights(name, seed=0, dtype_name="auto", spec=None, param_sharding=None):
        spec = spec or table.MODELS[name]
        dtype = models.resolve_dtype(dtype_name)
        net = models.build_network(spec, dtype)
        params = models.init_params(net, seed)
        path = models.tiny_tokenizer_path()
        return models.LoadedModel(spec, net, params, models.make_tokenizer("gemma3", path), path,
                                  "random init (benchmark)", dtype)

    models.load_model = random_weights
    run_dir = os.path.join(workdir, f"{model}-{quantization}")
    os.makedirs(run_dir, exist_ok=True)
    cfg = {"model": model, "dataset": sample_dataset_path(), "method": "lora", "lora_rank": 8,
           "quantization": quantization, "dtype": "bfloat16", "batch_size": 2, "max_seq_len": 128,
           "max_steps": steps, "eval_every": 1000, "checkpoint_every": 1000, "allow_cpu": True}
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg)
    tr = loop.Trainer(run_dir, TrainingConfig.from_dict(cfg), log=lambda m: None)
    result = tr.run()
    frozen_bytes = sum(x.nbytes for x in __import__("jax").tree.leaves(tr.frozen))
    print(json.dumps({"state": result.state, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "rss_end": psutil.Process().memory_info().rss, "frozen_nbytes": frozen_bytes,
                      "memory": tr.memory_analysis.get("memory", {})}))


def param_bytes_table(model: str) -> dict:
    import jax
    import jax.numpy as jnp

    from gemma_ft_widgets import models as table
    from gemma_ft_widgets.train import models, quantize

    spec = table.MODELS[model]
    net = models.build_network(spec, jnp.bfloat16)
    params = models.init_params(net, 0)
    out = {"bf16": (quantize.param_bytes(params), sum(x.nbytes for x in jax.tree.leaves(params)))}
    for mode in ("int8", "int4"):
        frozen = quantize.quantize_params(quantize.wrap(net, 8, mode, jnp.bfloat16), params, mode)
        out[mode] = (quantize.param_bytes(frozen), sum(x.nbytes for x in jax.tree.leaves(frozen)))
    return out


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--model", default=None, help="default gemma3-270m (--smoke: tiny)")
    p.add_argument("--steps", type=int, default=None, help="train steps per run (default 3)")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "QUANT", "WORKDIR"), help=argparse_hidden())
    args = p.parse_args(argv)
    steps = args.steps or (2 if args.smoke else 3)
    if args.child:
        child(args.child[0], args.child[1], steps, args.child[2])
        return 0
    model = args.model or ("tiny" if args.smoke else "gemma3-270m")
    rounds = args.rounds or (1 if args.smoke else 2)
    C.print_machine()

    sizes = param_bytes_table(model)
    bf16 = sizes["bf16"][0]
    C.table(["base", "bytes (int4 at 4 bits)", "nbytes on this host", "÷ bf16"],
            [(k, f"{b / 1e6:.1f} MB", f"{n / 1e6:.1f} MB", C.fmt(b / bf16)) for k, (b, n) in sizes.items()],
            title=f"{model}: frozen base parameter bytes")

    runs = {"none": [], "int4": []}
    with tempfile.TemporaryDirectory() as work:
        for r in range(rounds):
            for q in ("none", "int4"):
                out = C.run_json([C.PY, os.path.abspath(__file__), "--steps", str(steps), "--child", model, q,
                                  os.path.join(work, f"r{r}")], timeout=1800)
                assert out["state"] == "FINISHED", out
                runs[q].append(out)
    med = {q: {k: C.median(o[k] for o in v) for k in ("maxrss", "rss_end")} for q, v in runs.items()}
    C.table(["base", "peak RSS", "RSS after the last step", "frozen nbytes", "XLA temp"],
            [(q, f"{med[q]['maxrss'] / 1e9:.2f} GB", f"{med[q]['rss_end'] / 1e9:.2f} GB",
              f"{runs[q][0]['frozen_nbytes'] / 1e6:.0f} MB",
              f"{runs[q][0]['memory'].get('temp_size_in_bytes', 0) / 1e6:.0f} MB") for q in runs],
            title=f"{model} LoRA run (bf16, batch 2 x 128, {steps} steps), medians of {rounds}")
    C.result("base_bytes_int8_vs_bf16", ratio=sizes["int8"][0] / bf16, target=None, note=model)
    C.result("base_bytes_int4_vs_bf16", ratio=sizes["int4"][0] / bf16, target=None, note=f"{model}, int4 at 4 bits")
    C.result("peak_rss_int4_vs_none", ratio=med["int4"]["maxrss"] / med["none"]["maxrss"], target=None,
             note=f"{model} LoRA run, ru_maxrss")
    C.result("end_rss_int4_vs_none", ratio=med["int4"]["rss_end"] / med["none"]["rss_end"], target=None,
             note=f"{model} LoRA run, RSS after the last step")
    C.finish(args, {"model": model, "sizes": sizes, "runs": runs})
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
