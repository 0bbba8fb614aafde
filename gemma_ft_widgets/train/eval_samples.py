"""Greedy samples at each eval, in the trainer's own process: `sample` events.

`EvalSampler.create(trainer)` picks the prompts once: config.eval_prompts (no reference), or
the first EVAL_SAMPLES prompts of the eval split with their responses as references. It builds
one gm.text.Sampler on the run's model (the LoRA model with the current adapters, or the full
model). `run(step)` samples every prompt in one batch with the weights of that moment: the
sampler's jitted loop takes the params as an argument, and the prompts are padded to one
length, so the loop compiles at the first eval and is reused at every later one.

Cost is bounded by config.sample_tokens (new tokens per completion); benchmarks/eval_samples.py
measures it against training time. The one-off build and compile of the sampler would fall on
the first eval; for LoRA, `warm_up()` does it in a thread while the train step compiles (XLA
compiles with the GIL released, so the two overlap), on a copy of the adapters, since the train
step donates the live ones (one process only: two threads' collectives could interleave). A stop
does not wait for it: the trainer process leaves with os._exit.

In a run of several processes every process samples, on the same prompts (gemma's sampler runs
collectives across hosts, which is why sampling on process 0 alone hung both processes), and
process 0 writes the events.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from .. import contract
from ..config import EVAL_SAMPLES
from ..datasets import END, START

_PAD_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclasses.dataclass
class Prompt:
    """One prompt sampled at each eval: as the model sees it, as the table shows it, and its reference."""

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
    """Samples the eval prompts with the current weights at each eval (see the module docstring)."""

    def __init__(self, trainer, prompts: list[Prompt]):
        self.trainer = trainer
        self.prompts = prompts
        self.max_tokens = trainer.config.sample_tokens
        self._sampler = None
        self._lora_model = None  # the LoRA-wrapped base without remat, built at first use
        self._warming: threading.Thread | None = None
        self.seconds: list[float] = []  # wall time of each run(), for the log and the benchmark
        self.warm_up_s: float | None = None  # the background build + compile, when it ran

    @classmethod
    def create(cls, trainer) -> EvalSampler | None:
        """The run's sampler, or None when sample_tokens is 0 or there is no prompt to sample."""
        cfg = trainer.config
        if cfg.sample_tokens <= 0:
            return None
        prompts = pick_prompts(cfg, getattr(trainer.data, "eval_pairs", []))
        return cls(trainer, prompts) if prompts else None

    def _network(self):
        """The base network (no remat: sampling has no backward pass), LoRA-wrapped for LoRA."""
        from . import quantize

        tr, cfg = self.trainer, self.trainer.config
        if not tr.is_lora:
            return tr.loaded.model
        if self._lora_model is None:
            self._lora_model = quantize.wrap_lora(tr.loaded.model, cfg.lora_rank, cfg.quantization,
                                                  dtype=tr.loaded.dtype)
        return self._lora_model

    def _params(self, trainable):
        from . import lora

        tr = self.trainer
        return lora.merge(tr.frozen, lora.to_compute(trainable, tr.loaded.dtype)) if tr.is_lora else trainable

    def warm_up(self) -> None:
        """Build and compile the sampler in a thread (LoRA: the adapters are small to copy; a
        full fine-tune would need a second copy of the model, so it compiles at the first eval)."""
        if (not self.trainer.is_lora or self._sampler is not None or self._warming is not None
                or self.trainer.processes > 1):  # collectives from two threads could interleave
            return
        import jax
        import jax.numpy as jnp

        tr = self.trainer
        params = self._params(jax.tree.map(jnp.copy, tr.trainable))  # not the buffers the step donates

        def work():
            t = time.time()
            try:
                sampler = self._build(self._network(), params)
                sampler.sample([p.text for p in self.prompts], max_new_tokens=self.max_tokens)
                self._sampler = sampler
                self.warm_up_s = time.time() - t
                tr._log(f"samples: sampler built and compiled in {self.warm_up_s:.1f}s, beside the train step")
            except Exception as e:  # noqa: BLE001 - the first eval builds it again, and says why then
                tr._log(f"samples: warming up the sampler failed ({type(e).__name__}: {e}); "
                        "it is built at the first eval")

        self._warming = threading.Thread(target=work, name="eval-sampler-warm-up", daemon=True)
        self._warming.start()

    def wait(self, timeout: float | None = None) -> None:
        """Let a warm-up in flight finish (before sampling with the sampler it builds)."""
        if self._warming is not None:
            self._warming.join(timeout)
            if not self._warming.is_alive():
                self._warming = None

    def _build(self, model, params):
        from gemma import gm

        loaded = self.trainer.loaded
        tokens = max(len(loaded.tokenizer.encode(p.text)) + 1 for p in self.prompts)
        pad = next((b for b in _PAD_BUCKETS if b >= tokens), tokens)
        cls = gm.text.Gemma4Sampler if loaded.spec.family == "gemma4" else gm.text.Sampler
        return cls(model=model, params=params, tokenizer=loaded.tokenizer,
                   cache_length=pad + self.max_tokens + 8, max_out_length=self.max_tokens, pad_length=pad)

    def _placement(self) -> dict:
        """Several processes sample together, as they train: each holds the same prompts, placed
        replicated on the run's mesh (gemma's sampler then runs its collectives on every
        process); process 0 writes the events."""
        if self.trainer.processes == 1:
            return {}
        from .sharding import replicated

        return {"sharding": replicated(self.trainer.mesh)}

    def run(self, step: int) -> list[dict]:
        """Sample every prompt with the current weights; one event each."""
        self.wait()
        t = time.time()
        params = self._params(self.trainer.trainable)
        if self._sampler is None:
            self._sampler = self._build(self._network(), params)
        else:  # the same static attributes: the jitted loop is reused, only the weights change
            object.__setattr__(self._sampler, "params", params)
        from .sample import clean_output

        texts = self._sampler.sample([p.text for p in self.prompts], max_new_tokens=self.max_tokens,
                                     **self._placement())
        events = [self.trainer.event(contract.EVENT_SAMPLE, step=step, prompt=p.shown, reference=p.reference,
                                     completion=clean_output(text))
                  for p, text in zip(self.prompts, texts)]
        self.seconds.append(time.time() - t)
        return events
