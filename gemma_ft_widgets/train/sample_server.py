"""A warm sampling process: one run's checkpoint loaded once, answering the playground over a pipe.

    python -m gemma_ft_widgets.train.sample_server RUN_DIR [--checkpoint N] [--idle-timeout S]

Started by the kernel side (runs/warm_sampler.py), never by hand. The protocol is JSON lines:
requests on stdin, replies and events on stdout (the process's other output goes to stderr,
so nothing else can land on the protocol stream).

Events, unasked:
    {"event": "progress", "phase": "loading the model and step_20"}   (also with "id" in a request)
    {"event": "ready", "checkpoint": PATH | null, "pid": N}            once, after loading
    {"event": "error", "error": TEXT}                                  loading failed; it exits 2
    {"event": "idle", "seconds": S}                                    idle timeout; it exits 0

Requests, each answered by one reply with the same "id" ({"id", "ok": false, "error"} on a
bad request or a sampling error):
    {"id": 1, "op": "generate", "model": "tuned" | "base",
     "messages": [{"role": "user" | "assistant", "content": TEXT}, ...],   ends with a user turn
     "max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 0}
        -> {"id": 1, "ok": true, "text": TEXT, "model": ..., "seed": 0, "prompt_tokens": N,
            "seconds": S}
    {"id": 2, "op": "idle_timeout", "seconds": S}   -> {"id": 2, "ok": true}
    {"id": 3, "op": "close"}                         -> {"id": 3, "ok": true}, then it exits 0

It also exits 0 on end of file on stdin (the kernel closed the pipe, or died; while loading
too) and when no request came for the idle timeout. The conversation is rendered with the trainer's own turn
layout (datasets.render_conversation: `<start_of_turn>user … <end_of_turn>`), so the model
sees what it was trained on; the kernel keeps the history and sends it whole each time, so the
process holds no conversation state and a restarted one loses nothing. That is why it samples
with gm.text.Sampler and the library's sampling methods (Greedy, TopkSampling, TopPSampling)
rather than gm.text.ChatSampler, which keeps one conversation's KV cache inside the process:
base and fine-tuned each continue their own conversation here, and the panel can clear or
change it at will. The layout is the one dialog (ChatSampler's formatter) writes for Gemma 3
(tests/test_warm_sampler.py). "base" is the run's base model without the fine-tuning, loaded on
its first request.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import time

from .. import contract
from . import compile_cache

DEFAULT_IDLE_TIMEOUT = 600.0


class Lines:
    """Complete lines from a file descriptor, with a timeout (select on the fd, own buffer:
    a buffered reader could hold a line that select would then never announce)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def next(self, timeout: float | None) -> bytes | None:
        """A line; b"" at end of file; None when `timeout` passed with no complete line."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


class Server:
    """The loaded models of one run and the request loop (see the module docstring)."""

    def __init__(self, run_dir: str, checkpoint: str | None, out):
        self.run_dir, self.checkpoint, self.out = os.path.abspath(run_dir), checkpoint, out
        self.models: dict = {}

    def send(self, obj: dict) -> None:
        """Write one JSON line on the protocol stream."""
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()

    def load(self) -> str | None:
        """Load the run's checkpoint as the "tuned" model; returns its path (None: the base weights)."""
        from . import sample

        path = sample.resolve_checkpoint(self.run_dir, self.checkpoint)
        self.send({"event": "progress", "phase": f"loading the model and "
                   f"{os.path.basename(path) if path else 'its base weights'}"})
        self.models["tuned"], path = sample.load_params(self.run_dir, path)
        return path

    def model(self, which: str, say):
        """The loaded "tuned" or "base" model, loading the base one at its first use."""
        if which not in self.models:  # "base": the run's base weights as loaded, no checkpoint
            from . import models, sample

            say("loading the base model")
            config = sample.run_config(self.run_dir)
            self.models[which] = models.load_model(config.model, seed=config.seed, dtype_name=config.dtype)
        return self.models[which]

    def generate(self, req: dict, say) -> dict:
        """Answer a generate request: the completion of its conversation by the chosen model;
        ValueError for a bad request."""
        from ..datasets import render_conversation
        from . import sample

        which = req.get("model", "tuned")
        if which not in ("tuned", "base"):
            raise ValueError(f"unknown model {which!r}: 'tuned' or 'base'")
        messages = req.get("messages")
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn")
        t0 = time.time()
        loaded = self.model(which, say)
        if len(messages) == 1 and "<start_of_turn>" in messages[0]["content"]:
            prompt = messages[0]["content"]  # already laid out in turns: used as it is
        else:
            prompt = render_conversation(messages)
        method = sample.sampling_method(float(req.get("temperature", 0.0)), float(req.get("top_p", 1.0)),
                                        int(req.get("top_k", 0)))
        seed = int(req.get("seed", 0))
        text = sample.complete(loaded, prompt, int(req.get("max_new_tokens", 64)), sampling=method, seed=seed,
                               say=say)
        return {"text": text, "model": which, "seed": seed, "prompt_tokens": len(loaded.tokenizer.encode(prompt)) + 1,
                "seconds": round(time.time() - t0, 3)}

    def serve(self, lines: Lines, idle_timeout: float) -> int:
        """Answer requests until a close, the end of stdin or `idle_timeout` seconds without one;
        returns the exit code (0)."""
        while True:
            raw = lines.next(idle_timeout if idle_timeout > 0 else None)
            if raw is None:
                self.send({"event": "idle", "seconds": idle_timeout})
                return 0
            if raw == b"":
                return 0  # the kernel closed the pipe or is gone
            try:
                req = json.loads(raw)
                if not isinstance(req, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as e:
                self.send({"id": None, "ok": False, "error": f"bad request: {e}"})
                continue
            rid, op = req.get("id"), req.get("op")
            say = lambda phase, rid=rid: self.send({"id": rid, "event": "progress", "phase": phase})  # noqa: E731
            try:
                if op == "generate":
                    self.send({"id": rid, "ok": True, **self.generate(req, say)})
                elif op == "idle_timeout":
                    idle_timeout = float(req["seconds"])
                    self.send({"id": rid, "ok": True})
                elif op == "close":
                    self.send({"id": rid, "ok": True})
                    return 0
                else:
                    self.send({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
            except Exception as e:  # noqa: BLE001 - one failed request must not end the process
                self.send({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})


def _end_if_stdin_stirs(loading: threading.Event) -> None:
    """While the model loads (minutes for a large one), the kernel sends nothing but a close
    request or, by closing the pipe or dying, an end of file: either means stop loading now."""
    while loading.is_set():
        ready, _, _ = select.select([0], [], [], 0.2)
        if ready and loading.is_set():
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Load the checkpoint, send `ready` and serve (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m gemma_ft_widgets.train.sample_server",
                                     description="A warm sampling process for the playground (JSON lines).")
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default=None, help="N, step_N or a path; default: newest")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
                        help="exit after this many seconds without a request (0: never)")
    args = parser.parse_args(argv)
    # The protocol owns the real stdout; anything else printing (libraries) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt (SIGINT to its group) is not for us
    compile_cache.enable(args.run_dir)  # a warm playground's first load compiles once per shape
    server = Server(args.run_dir, args.checkpoint, out)
    loading = threading.Event()
    loading.set()
    threading.Thread(target=_end_if_stdin_stirs, args=(loading,), daemon=True).start()
    try:
        path = server.load()
    except Exception as e:  # noqa: BLE001 - reported to the kernel, which shows it
        server.send({"event": "error", "error": f"{type(e).__name__}: {e}" if not isinstance(
            e, (FileNotFoundError, ValueError)) else str(e)})
        return contract.EXIT_CONFIG_ERROR
    loading.clear()  # before "ready": only after it may a request arrive
    server.send({"event": "ready", "checkpoint": path, "pid": os.getpid()})
    code = server.serve(Lines(0), args.idle_timeout)
    # At once: an interpreter with jax loaded can take seconds to tear down, and a kernel that
    # went away expects its sampler gone with it. Nothing here needs flushing but the protocol.
    out.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
