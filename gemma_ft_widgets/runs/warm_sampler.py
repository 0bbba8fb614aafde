"""Warm samplers: one sampling process per (run, checkpoint), kept loaded between Generates.

A cold `RunManager.sample` starts python, imports jax, loads the model and compiles for every
prompt (12-14 s on tiny). Here the process (train/sample_server.py; its docstring holds the
JSON-lines protocol) stays up, so a second Generate pays for sampling only. This side never
imports jax.

A sampler ends
- when idle: the process exits by itself after `idle_timeout` s without a request;
- on `close()` (the panel closing closes its pool) and when this process exits (atexit);
  a kernel that is killed closes the pipe, which the process reads as its end;
- before a run starts (`end_all(workspace)`, called by RunManager.start and resume): every
  sampler of the workspace, whoever started it, found through <workspace>/.samplers/<pid>.json
  and signalled only after its pid, create time and command line are verified.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import psutil

from .. import contract
from . import identity
from .errors import RunError
from .launch import package_env
from .state import Proc

SERVER_MODULE = "gemma_ft_widgets.train.sample_server"
DEFAULT_IDLE_TIMEOUT = 600.0  # s without a request before the process ends itself
MAX_NEW_TOKENS = 4096
ROLES = ("user", "assistant")
_EOF = object()


class SamplerGone(RunError):
    """The process ended before it answered (idle timeout, end_all, a crash)."""


def check_request(messages: Any, max_new_tokens: Any = 64, temperature: Any = 0.0, top_p: Any = 1.0,
                  top_k: Any = 0, seed: Any = None) -> dict:
    """A generate request, checked before any process starts; RunError says what is wrong.
    A seed of None picks one at random (returned, so the answer can be reproduced)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise RunError("give a prompt (messages: a list of {'role', 'content'})")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RunError(f"each message needs a role ({' or '.join(ROLES)}) and a text content, got {m!r}")
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise RunError("the conversation must end with a user message that is not empty")

    def number(name, value, kind, low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
                or not math.isfinite(value) or not low <= value <= high:
            raise RunError(f"{name} must be {'a whole number' if kind is int else 'a number'} from {low} to {high}, "
                           f"got {value!r}")
        return kind(value)

    out = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
           "max_new_tokens": number("max new tokens", max_new_tokens, int, 1, MAX_NEW_TOKENS),
           "temperature": number("temperature", temperature, float, 0.0, 100.0),
           "top_p": number("top-p", top_p, float, 0.0, 1.0),
           "top_k": number("top-k", top_k, int, 0, 1_000_000),
           "seed": random.randrange(2**31) if seed is None else number("seed", seed, int, 0, 2**32 - 1)}
    if out["top_p"] <= 0:
        raise RunError("top-p must be above 0 (1 keeps every token)")
    if out["top_k"] > 0 and out["top_p"] < 1:
        raise RunError("use top-k or top-p, not both: the gemma sampler applies one (top-k 0 or top-p 1 turns it off)")
    return out


def registry_dir(workspace: str) -> str:
    """The workspace folder where each warm sampler process registers itself."""
    return os.path.join(workspace, contract.SAMPLERS_DIR)


class WarmSampler:
    """One sampling process on one checkpoint, its pipes, and its entry in the registry."""

    def __init__(self, workspace: str, run_dir: str, checkpoint: int | None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        self.run_dir, self.checkpoint = run_dir, checkpoint
        folder = registry_dir(workspace)
        os.makedirs(folder, exist_ok=True)
        self.cmd = [sys.executable, "-m", SERVER_MODULE, run_dir, "--idle-timeout", str(float(idle_timeout))]
        if checkpoint is not None:
            self.cmd += ["--checkpoint", str(checkpoint)]
        fd, self.log_path = tempfile.mkstemp(prefix="sampler-", suffix=".log", dir=folder)
        env = package_env()
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the accelerator with a live run
        with os.fdopen(fd, "wb") as log:
            # In the kernel's process group, unlike a run: Jupyter's kill of a kernel (restart,
            # shutdown) takes it along. It ignores SIGINT, so an interrupt of the kernel does not.
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env=env)
        # Popen returns after exec: create time and command line are final.
        self.create_time = psutil.Process(self.proc.pid).create_time()
        self.registry_path = os.path.join(folder, f"{self.proc.pid}.json")
        contract.atomic_write_json(self.registry_path, {
            "pid": self.proc.pid, "create_time": self.create_time, "cmdline": self.cmd, "run_dir": run_dir,
            "checkpoint": checkpoint, "owner": identity.describe(os.getpid())})
        self.ready_info: dict | None = None
        self.last_used = time.monotonic()
        self._events: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._mutex = threading.Lock()  # one request at a time
        self._write_mutex = threading.Lock()
        self._stderr_tail = ""
        threading.Thread(target=self._read, name=f"gft-warm-sampler-{self.proc.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        """The sampler process's pid."""
        return self.proc.pid

    @property
    def identity(self) -> tuple[int, float, list[str]]:
        """(pid, create time, command line): what identity.check needs to verify the process."""
        return self.proc.pid, self.create_time, self.cmd

    @property
    def alive(self) -> bool:
        """Whether the sampler process has not exited."""
        return self.proc.poll() is None

    def _read(self) -> None:
        """Every line the process prints, as a dict, onto the queue; _EOF when it ends."""
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self._events.put(msg)
        self.proc.wait()  # reap it
        self._stderr_tail = self._tail()
        self._forget()
        self._events.put(_EOF)

    def _tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "\n".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def _forget(self) -> None:
        for path in (self.registry_path, self.log_path):
            try:
                os.unlink(path)
            except OSError:
                pass

    def _write(self, obj: dict) -> None:
        with self._write_mutex:
            try:
                self.proc.stdin.write((json.dumps(obj, ensure_ascii=False) + "\n").encode())
                self.proc.stdin.flush()
            except (OSError, ValueError):  # the pipe is closed: the process ended
                raise SamplerGone("the sampling process had ended") from None

    def _next(self, deadline: float, what: str) -> dict:
        try:
            msg = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.close(wait=0)
            raise RunError(f"{what} took too long; the sampling process was stopped") from None
        if msg is _EOF:
            self._events.put(_EOF)  # for every later reader
            tail = self._stderr_tail or self._tail()
            raise SamplerGone(f"the sampling process ended (exit {self.proc.returncode})"
                              + (f":\n{tail}" if tail else ""))
        return msg

    def wait_ready(self, timeout: float = 300, on_progress: Callable[[str], None] | None = None) -> dict:
        """{"event": "ready", "checkpoint", "pid"} once the model is loaded."""
        with self._mutex:
            return self._wait_ready(time.monotonic() + timeout, on_progress)

    def _wait_ready(self, deadline: float, on_progress) -> dict:
        while self.ready_info is None:
            msg = self._next(deadline, "loading the model")
            if msg.get("event") == "progress" and on_progress is not None:
                on_progress(str(msg.get("phase")))
            elif msg.get("event") == "error":
                raise RunError(f"the sampler could not load the run: {msg.get('error')}")
            elif msg.get("event") == "ready":
                self.ready_info = msg
        return self.ready_info

    def request(self, op: str, timeout: float = 300, on_progress: Callable[[str], None] | None = None,
                **fields) -> dict:
        """Send one request and wait for its reply (progress events go to on_progress)."""
        with self._mutex:
            deadline = time.monotonic() + timeout
            self._wait_ready(deadline, on_progress)
            rid = next(self._ids)
            self._write({"id": rid, "op": op, **fields})
            while True:
                msg = self._next(deadline, "sampling")
                if msg.get("event") == "progress":
                    if on_progress is not None and msg.get("id") == rid:
                        on_progress(str(msg.get("phase")))
                elif msg.get("id") == rid:
                    self.last_used = time.monotonic()
                    if not msg.get("ok"):
                        raise RunError(f"sampling failed: {msg.get('error')}")
                    return msg

    def close(self, wait: float = 5.0) -> None:
        """Ask it to end (close request, then end of file); kill it, verified, after `wait` s."""
        if self.alive:
            try:
                self._write({"id": None, "op": "close"})
            except SamplerGone:
                pass
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                state, proc = identity.verify(*self.identity)
                if state == Proc.ALIVE:
                    identity.signal_verified(proc, signal.SIGKILL)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self._forget()


class WarmSamplers:
    """The warm samplers of one owner (a panel): at most `max_warm` processes, the least
    recently used closed first. `generate(...)` starts one on first use and reuses it."""

    def __init__(self, workspace: str, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_warm: int = 1,
                 timeout: float = 300):
        self.workspace = os.path.abspath(workspace)
        self.idle_timeout, self.max_warm, self.timeout = idle_timeout, max_warm, timeout
        self._samplers: collections.OrderedDict[tuple, WarmSampler] = collections.OrderedDict()
        self._mutex = threading.Lock()
        self._closed = False
        _POOLS.add(self)

    @staticmethod
    def key(run_dir: str, checkpoint: int | None) -> tuple:
        """(run, checkpoint step, the checkpoint's mtime): a re-saved step is a new key. None:
        the newest, resolved now."""
        run_dir = os.path.abspath(run_dir)
        steps = contract.checkpoint_steps(run_dir)
        step = (steps[-1] if steps else None) if checkpoint is None else int(checkpoint)
        if step is not None and step not in steps:
            raise RunError(f"checkpoint step {step} not found in {os.path.basename(run_dir)} (has {steps or 'none'})")
        try:
            stamp = os.path.getmtime(contract.checkpoint_path(run_dir, step)) if step is not None else None
        except OSError:
            stamp = None
        return run_dir, step, stamp

    def sampler(self, run_dir: str, checkpoint: int | None = None) -> WarmSampler | None:
        """The live process for this (run, checkpoint), if any."""
        with self._mutex:
            s = self._samplers.get(self.key(run_dir, checkpoint))
            return s if s is not None and s.alive else None

    def start(self, run_dir: str, checkpoint: int | None = None) -> WarmSampler:
        """The live sampler for (run, checkpoint), started if there is none."""
        key = self.key(run_dir, checkpoint)
        with self._mutex:
            if self._closed:
                raise RunError("the playground was closed")
            s = self._samplers.get(key)
            if s is not None and s.alive:
                self._samplers.move_to_end(key)
                return s
            self._samplers.pop(key, None)
            while len(self._samplers) >= self.max_warm:
                self._samplers.popitem(last=False)[1].close()
            s = self._samplers[key] = WarmSampler(self.workspace, key[0], key[1], self.idle_timeout)
            return s

    def generate(self, run_dir: str, messages: Any, checkpoint: int | None = None, model: str = "tuned",
                 on_progress: Callable[[str], None] | None = None, timeout: float | None = None,
                 **settings) -> dict:
        """One completion: {"text", "model", "seed", "prompt_tokens", "seconds", "checkpoint",
        "pid"}. `messages` is a prompt or the whole conversation, ending with the user's turn;
        settings: max_new_tokens, temperature, top_p, top_k, seed (see check_request)."""
        req = check_request(messages, **settings)
        if model not in ("tuned", "base"):
            raise RunError(f"model must be 'tuned' or 'base', got {model!r}")
        for attempt in (1, 2):
            s = self.start(run_dir, checkpoint)
            try:
                reply = s.request("generate", timeout or self.timeout, on_progress, model=model, **req)
                return {**reply, "checkpoint": s.ready_info.get("checkpoint"), "pid": s.pid}
            except SamplerGone:
                if attempt == 2 or s.ready_info is None:  # it ended while loading: a real failure
                    raise
                # It ended between two requests (its idle timeout, end_all): start a fresh one.
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End every process of this pool (idempotent)."""
        with self._mutex:
            self._closed = True
            samplers, self._samplers = list(self._samplers.values()), collections.OrderedDict()
        for s in samplers:
            s.close()


_POOLS: weakref.WeakSet[WarmSamplers] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()


def end_all(workspace: str, timeout: float = 5.0) -> int:
    """End every warm sampler of the workspace (a run is about to need the accelerator):
    SIGTERM, SIGKILL after `timeout` s, each verified by pid, create time and command line
    first. Entries of processes that are gone are removed. Returns how many were running."""
    folder = registry_dir(workspace)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json")]
    except OSError:
        return 0
    live = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue  # being written right now, or not ours to judge
        state, proc = identity.verify(entry.get("pid"), entry.get("create_time"), entry.get("cmdline"))
        if state == Proc.ALIVE and identity.signal_verified(proc, signal.SIGTERM):
            live.append((proc, path))
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    if live:
        _, stuck = psutil.wait_procs([p for p, _ in live], timeout=timeout)
        for p in stuck:
            identity.signal_verified(p, signal.SIGKILL)
        psutil.wait_procs(stuck, timeout=timeout)
        for _, path in live:
            try:
                os.unlink(path)
            except OSError:
                pass
    return len(live)
