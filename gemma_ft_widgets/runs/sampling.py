"""Sampling from and exporting a run, each in a subprocess so jax never loads in the kernel.

Both modules (gemma_ft_widgets.train.sample / gemma_ft_widgets.export) belong to the trainer side; this only
launches them with an argument list (never a shell) and reports their failure readably.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from .. import contract
from .errors import RunError
from .launch import package_env

SAMPLE_MODULE = "gemma_ft_widgets.train.sample"
EXPORT_MODULE = "gemma_ft_widgets.export"


def _env() -> dict[str, str]:
    return package_env()


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


PROGRESS_PREFIX = contract.PROGRESS_PREFIX  # train/sample.py and export --progress


def _watch(cmd: list[str], tmp: str, timeout: float | None, on_progress, what: str) -> tuple[int, str, str]:
    """Run `cmd`, calling on_progress for its progress lines; (exit code, stdout, other stderr).
    Output goes to files in `tmp`, not pipes: nothing to drain while we watch."""
    out_file, err_file = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_env())
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=0.2)
            done = True
        except subprocess.TimeoutExpired:
            done = False
        seen = _report(err_file, seen, on_progress)
        if done:
            break
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()  # our own child, by its Popen handle
            proc.wait()
            raise RunError(f"{what} took longer than {timeout} s and was stopped")
    stdout = open(out_file, encoding="utf-8", errors="replace").read()
    stderr = "".join(line for line in open(err_file, encoding="utf-8", errors="replace")
                     if not line.startswith(PROGRESS_PREFIX))
    return proc.returncode, stdout, stderr


def sample(run_dir: str, prompt: str, max_new_tokens: int = 64, checkpoint=None, timeout: float = 300,
           on_progress=None) -> dict:
    """{"text", "checkpoint", "seconds"} from the run's newest (or the given) checkpoint.
    `on_progress(phase)` hears each phase the sampler reports ("loading…", "generating…")."""
    with tempfile.TemporaryDirectory(prefix="gemma-ft-sample-") as tmp:
        prompt_file = os.path.join(tmp, "prompt.txt")
        with open(prompt_file, "w", encoding="utf-8") as f:
            f.write(prompt)
        cmd = [sys.executable, "-m", SAMPLE_MODULE, run_dir, "--prompt-file", prompt_file,
               "--max-new-tokens", str(int(max_new_tokens)), "--json", "--progress"]
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        code, stdout, stderr = _watch(cmd, tmp, timeout, on_progress, "sampling")
    if code != 0:
        raise RunError(f"sampling failed (exit {code}):\n{_tail(stderr) or '(no output)'}")
    for line in reversed(stdout.strip().splitlines()):  # the JSON is the last line
        try:
            out = json.loads(line)
        except ValueError:
            continue
        if isinstance(out, dict) and "text" in out:
            return out
    raise RunError(f"sampling printed no JSON result:\n{_tail(stdout + stderr)}")


def _report(err_file: str, seen: int, on_progress) -> int:
    """Call on_progress for each complete progress line past byte `seen`; the new offset."""
    with open(err_file, "rb") as f:
        f.seek(seen)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode("utf-8", errors="replace").splitlines():
        if line.startswith(PROGRESS_PREFIX) and on_progress is not None:
            on_progress(line[len(PROGRESS_PREFIX):])
    return seen + end


def export(run_dir: str, out_dir: str, timeout: float | None = None, format: str = "gemma",
           checkpoint=None, dtype: str | None = None, on_progress=None) -> str:
    """Run the exporter; returns its stdout (the folder, then the command that loads it).
    Raises RunError with stderr's tail on failure; `on_progress(phase)` hears its phases."""
    from ..export import ExportError, check_request

    try:
        check_request(format, dtype)  # before any process starts
    except ExportError as e:
        raise RunError(str(e)) from None
    cmd = [sys.executable, "-m", EXPORT_MODULE, run_dir, "--out", os.path.abspath(out_dir),
           "--format", format, "--progress"]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    if dtype is not None:
        cmd += ["--dtype", dtype]
    with tempfile.TemporaryDirectory(prefix="gemma-ft-export-") as tmp:
        code, stdout, stderr = _watch(cmd, tmp, timeout, on_progress, "export")
    if code != 0:
        raise RunError(f"export failed (exit {code}):\n{_tail(stderr) or '(no output)'}")
    return stdout
