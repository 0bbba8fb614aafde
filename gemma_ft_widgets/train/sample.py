"""Sample from a run's checkpoint: the panel's playground.

    sample(run_dir, prompt, max_new_tokens=64, checkpoint=None) -> str
    python -m gemma_ft_widgets.train.sample RUN_DIR --prompt-file F [--prompt TEXT] \
        --max-new-tokens N [--checkpoint PATH] --json
        -> {"text": ..., "checkpoint": ..., "seconds": ...}

The checkpoint (newest by default; a path, `step_N` or N) is loaded onto the run's base model
and LoRA adapters are folded into the base weights (lora.merge_into_base, the same code as
export), so sampling runs the plain gemma model with gm.text.Sampler, greedy. A quantized run
(int8/int4 base) samples through the model it trained: the quantized base, dequantized in each
layer, plus its adapters (train/quantize.py). A prompt without
`<start_of_turn>` is wrapped as one user turn. Loaded samplers are cached per (run, checkpoint)
in the calling process, so a playground pays the load and compile once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import contract
from . import compile_cache

PROGRESS_PREFIX = contract.PROGRESS_PREFIX
_CACHE: dict = {}
_CACHE_MAX = 2


def resolve_checkpoint(run_dir: str, checkpoint: str | int | None = None) -> str | None:
    """Absolute path of the checkpoint to use (newest when None), or None if there is none."""
    if checkpoint is None or checkpoint == "":
        steps = contract.checkpoint_steps(run_dir)
        return contract.checkpoint_path(run_dir, steps[-1]) if steps else None
    text = str(checkpoint)
    if text.isdigit():
        path = contract.checkpoint_path(run_dir, int(text))
    elif os.path.isabs(text):
        path = text
    elif text.startswith(contract.CHECKPOINT_PREFIX) and text[len(contract.CHECKPOINT_PREFIX):].isdigit():
        path = os.path.join(run_dir, contract.CHECKPOINTS_DIR, text)
    else:
        path = os.path.join(run_dir, text)
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def run_config(run_dir: str):
    """The run's TrainingConfig, read without checking its dataset files still exist."""
    from ..config import TrainingConfig

    return TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME), check_files=False)


def load_params(run_dir: str, checkpoint: str | int | None = None):
    """(LoadedModel with params = the checkpoint's weights merged into the base, ckpt path).

    With no checkpoint in the run (not trained yet) the base weights are returned as they are.
    """
    import jax

    from . import checkpoints, lora, models, quantize

    config = run_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    loaded = models.load_model(config.model, seed=config.seed, dtype_name=config.dtype)
    if path is None:
        return loaded, None
    if config.method == "lora" and config.quantization != "none":
        # Sampled through the model the run trained: int base dequantized per layer + adapters.
        qmodel = quantize.wrap(loaded.model, config.lora_rank, config.quantization, dtype=loaded.dtype)
        like = jax.eval_shape(lambda: lora.init_lora_params(qmodel, config.seed))
        adapters = lora.scaled(checkpoints.restore_params(path, like), lora.scale(config.lora_alpha, config.lora_rank))
        frozen = quantize.quantize_params(qmodel, loaded.params, config.quantization)
        loaded.model, loaded.params = qmodel, lora.merge(frozen, lora.to_compute(adapters, loaded.dtype))
    elif config.method == "lora":
        lora_model = lora.wrap(loaded.model, config.lora_rank, dtype=loaded.dtype)
        like = jax.eval_shape(lambda: lora.init_lora_params(lora_model, config.seed))
        adapters = lora.scaled(checkpoints.restore_params(path, like), lora.scale(config.lora_alpha, config.lora_rank))
        loaded.params = lora.merge_into_base(lora_model, loaded.params, adapters)
    else:
        loaded.params = checkpoints.restore_params(path, loaded.params)
    bad = checkpoints.nonfinite_count(loaded.params)
    if bad:  # its answer would be empty or garbage: say why instead
        raise ValueError(f"{os.path.basename(path)} holds {bad:,} non-finite weights (NaN or Infinity): the run "
                         "diverged before it was saved; sample an earlier checkpoint (--checkpoint N)")
    return loaded, path


def _sampler(loaded, cache_length: int, max_out_length: int):
    from gemma import gm

    pads = tuple(p for p in (64, 256, 512, 1024, 2048, 4096) if p <= cache_length - max_out_length)
    cls = gm.text.Gemma4Sampler if loaded.spec.family == "gemma4" else gm.text.Sampler
    return cls(model=loaded.model, params=loaded.params, tokenizer=loaded.tokenizer,
               cache_length=cache_length, max_out_length=max_out_length, pad_length=pads or None)


def chat_sampler(run_dir: str, checkpoint: str | int | None = None, cache_length: int = 1024,
                 max_out_length: int = 256):
    """A multi-turn gm.text.ChatSampler (greedy) on the run's checkpoint: `.chat(text)` per turn.

    cache_length must exceed the sampler's prompt padding buckets (256/512/1024): with 256 the
    second turn fails; 1024 works.
    """
    from gemma import gm

    loaded, _ = load_params(os.path.abspath(run_dir), checkpoint)
    return gm.text.ChatSampler(model=loaded.model, params=loaded.params, tokenizer=loaded.tokenizer,
                               multi_turn=True, cache_length=max(cache_length, 1024),
                               max_out_length=max_out_length)


def _bucket(n: int, buckets=(64, 128, 256, 512, 1024, 2048, 4096)) -> int:
    for b in buckets:
        if n <= b:
            return b
    return n


def format_prompt(prompt: str) -> str:
    """`prompt` in Gemma's turn format, unless it is already laid out in turns."""
    from ..datasets import render_prompt

    return prompt if "<start_of_turn>" in prompt else render_prompt(prompt)


def clean_output(text: str) -> str:
    """A completion cut at its first end-of-turn or end-of-sequence mark, stripped."""
    for end in ("<end_of_turn>", "<eos>"):
        if end in text:
            text = text[: text.index(end)]
    return text.strip()


def sample(run_dir: str, prompt: str, max_new_tokens: int = 64, checkpoint: str | None = None) -> str:
    """Greedy completion of `prompt` by the run's checkpoint (newest by default)."""
    return sample_detailed(run_dir, prompt, max_new_tokens, checkpoint)["text"]


def sample_detailed(run_dir: str, prompt: str, max_new_tokens: int = 64, checkpoint: str | None = None,
                    progress=None) -> dict:
    """{"text", "checkpoint", "seconds"}; `progress(phase)` is told each phase as it begins."""
    say = progress or (lambda phase: None)
    t0 = time.time()
    run_dir = os.path.abspath(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    stamp = os.path.getmtime(path) if path else None
    key = (run_dir, path, stamp)
    loaded = _CACHE.get(key)
    if loaded is None:
        say(f"loading the model and {os.path.basename(path) if path else 'its base weights'}")
        loaded, path = load_params(run_dir, path)
        while len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = loaded
    text = complete(loaded, format_prompt(prompt), max_new_tokens, say=say)
    return {"text": text, "checkpoint": path, "seconds": round(time.time() - t0, 3)}


def sampling_method(temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0):
    """The gemma library's sampling method for these settings: greedy at temperature 0, else
    top-k (k > 0) or nucleus (top-p; 1.0 samples the whole distribution). The library has no
    method doing both cuts; the kernel side refuses a request asking for both."""
    from gemma import gm

    if temperature <= 0:
        return gm.text.Greedy()
    if top_k > 0:
        return gm.text.TopkSampling(temperature=float(temperature), k=int(top_k))
    return gm.text.TopPSampling(p=float(top_p), temperature=float(temperature))


def complete(loaded, text: str, max_new_tokens: int, sampling=None, seed: int | None = None, say=None) -> str:
    """The model's answer to `text` (already in the turn format), cut at its end of turn.

    Samplers are kept per (cache length, output buffer) on `loaded`, so a repeated call of a
    similar size reuses jax's compiled functions (each distinct sampling method compiles once)."""
    say = say or (lambda phase: None)
    n_prompt = len(loaded.tokenizer.encode(text)) + 1
    max_out = _bucket(max_new_tokens)
    cache_length = max(1024, _bucket(n_prompt + max_out, (1024, 2048, 4096, 8192, 16384, 32768)))
    samplers = loaded.__dict__.setdefault("_samplers", {})
    sampler = samplers.get((cache_length, max_out))
    if sampler is None:
        say("building the sampler")
        sampler = samplers[(cache_length, max_out)] = _sampler(loaded, cache_length, max_out)
    say(f"generating up to {max_new_tokens} tokens")
    out = sampler.sample(text, max_new_tokens=max_new_tokens, sampling=sampling, rng=seed)
    return clean_output(out)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring): print the completion, or with --json one object (an error too)."""
    parser = argparse.ArgumentParser(prog="python -m gemma_ft_widgets.train.sample",
                                     description="Greedy sampling from a run's checkpoint.")
    parser.add_argument("run_dir")
    parser.add_argument("--prompt-file", help="read the prompt from this file (UTF-8)")
    parser.add_argument("--prompt", help="the prompt text (instead of --prompt-file)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--checkpoint", default=None, help="path, step_N or N; default: newest")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--progress", action="store_true",
                        help=f"print each phase to stderr as '{PROGRESS_PREFIX}PHASE' (for the playground)")
    args = parser.parse_args(argv)
    if args.prompt is not None:
        prompt = args.prompt
    elif args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompt = f.read()
    else:
        parser.error("give --prompt-file or --prompt")
    compile_cache.enable(args.run_dir)
    try:
        report = (lambda phase: print(PROGRESS_PREFIX + phase, file=sys.stderr, flush=True)) if args.progress else None
        result = sample_detailed(args.run_dir, prompt, args.max_new_tokens, args.checkpoint, progress=report)
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        if args.json:
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(result["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
