"""Greedy samples at each eval, in the trainer's own process: `sample` events.

`EvalSampler.create(trainer)` picks the prompts once: config.eval_prompts (no reference), or
the first EVAL_SAMPLES prompts of the eval split with their responses as references. It builds
one gm.text.Sampler on the run's model (the LoRA model with the current adapters, or the full
model). `run(step)` samples every prompt in one batch with the weights of that moment: the
sampler's jitted loop takes the params as an argument, and the prompts are padded to one
length, so the loop compiles at the first eval and is reused at every later one.

Cost is bounded by config.sample_tokens (new tokens per completion); benchmarks/eval_samples.py
measures it against training time. Runs of several processes log no samples yet: gathering the
weights (multihost_utils.process_allgather) and sampling on process 0 alone hung both
processes on CPU/gloo, so `create` says so once in the log and returns None.
"""

from __future__ import annotations

import dataclasses
import time

from .. import contract
from ..config import EVAL_SAMPLES
from ..datasets import END, START

_PAD_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclasses.dataclass
class Prompt:
    text: str  # as the model sees it (Gemma's turn format)
    shown: str  # as the table shows it (no markup)
    reference: str  # the dataset's response, "" for the user's own prompts


def plain(text: str) -> str:
    """A rendered prompt or response without the turn markup, for display."""
    for mark in (f"{START}user\n", f"{START}model\n", f"{END}\n", END):
        text = text.replace(mark, "\n" if mark.startswith(END) else "")
    return text.strip()


def pick_prompts(config, eval_pairs: list[tuple[str, str]]) -> list[Prompt]:
    """The prompts sampled at each eval (see the module docstring)."""
    from .sample import format_prompt

    if config.eval_prompts:
        return [Prompt(format_prompt(p), p, "") for p in config.eval_prompts]
    out = []
    for prompt, response in eval_pairs[:EVAL_SAMPLES]:
        if not prompt:  # the plain-text format: the first half of the text prompts the rest
            words = response.split(" ")
            half = max(1, len(words) // 2)
            prompt, response = " ".join(words[:half]) + " ", " ".join(words[half:])
            out.append(Prompt(prompt, prompt.strip(), response.strip()))
        else:
            out.append(Prompt(prompt, plain(prompt), plain(response)))
    return out


class EvalSampler:
    def __init__(self, trainer, prompts: list[Prompt]):
        self.trainer = trainer
        self.prompts = prompts
        self.max_tokens = trainer.config.sample_tokens
        self._sampler = None
        self.seconds: list[float] = []  # wall time of each run(), for the log and the benchmark

    @classmethod
    def create(cls, trainer) -> EvalSampler | None:
        cfg = trainer.config
        if cfg.sample_tokens <= 0:
            return None
        if trainer.processes > 1:
            trainer._log("samples: not logged in a run of several processes (not supported yet)")
            return None
        prompts = pick_prompts(cfg, getattr(trainer.data, "eval_pairs", []))
        return cls(trainer, prompts) if prompts else None

    def _model_and_params(self):
        from . import lora, quantize

        tr, cfg = self.trainer, self.trainer.config
        loaded = tr.loaded
        if tr.is_lora:  # the base network (no remat: sampling has no backward pass) + adapters
            if getattr(self, "_lora_model", None) is None:
                self._lora_model = quantize.wrap_lora(loaded.model, cfg.lora_rank, cfg.quantization,
                                                      dtype=loaded.dtype)
            return self._lora_model, lora.merge(tr.frozen, lora.to_compute(tr.trainable, loaded.dtype))
        return loaded.model, tr.trainable

    def _build(self, model, params):
        from gemma import gm

        loaded = self.trainer.loaded
        tokens = max(len(loaded.tokenizer.encode(p.text)) + 1 for p in self.prompts)
        pad = next((b for b in _PAD_BUCKETS if b >= tokens), tokens)
        cls = gm.text.Gemma4Sampler if loaded.spec.family == "gemma4" else gm.text.Sampler
        return cls(model=model, params=params, tokenizer=loaded.tokenizer,
                   cache_length=pad + self.max_tokens + 8, max_out_length=self.max_tokens, pad_length=pad)

    def run(self, step: int) -> list[dict]:
        """Sample every prompt with the current weights; one event each."""
        t = time.time()
        model, params = self._model_and_params()
        if self._sampler is None:
            self._sampler = self._build(model, params)
        else:  # the same static attributes: the jitted loop is reused, only the weights change
            object.__setattr__(self._sampler, "params", params)
        from .sample import clean_output

        texts = self._sampler.sample([p.text for p in self.prompts], max_new_tokens=self.max_tokens)
        events = [self.trainer.event(contract.EVENT_SAMPLE, step=step, prompt=p.shown, reference=p.reference,
                                     completion=clean_output(text))
                  for p, text in zip(self.prompts, texts)]
        self.seconds.append(time.time() - t)
        return events
