"""Sampling from and exporting a run, each in a subprocess so jax never loads in the kernel.

Both modules (gemma_ft_widgets.train.sample / .export) belong to the trainer side; this only
launches them with an argument list (never a shell) and reports their failure readably.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from .errors import RunError

SAMPLE_MODULE = "gemma_ft_widgets.train.sample"
EXPORT_MODULE = "gemma_ft_widgets.train.export"


def _env() -> dict[str, str]:
    from .manager import package_env

    return package_env()


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def sample(run_dir: str, prompt: str, max_new_tokens: int = 64, checkpoint=None, timeout: float = 300) -> dict:
    """{"text", "checkpoint", "seconds"} from the run's newest (or the given) checkpoint."""
    fd, prompt_file = tempfile.mkstemp(prefix="gemma-ft-prompt-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(prompt)
        cmd = [sys.executable, "-m", SAMPLE_MODULE, run_dir, "--prompt-file", prompt_file,
               "--max-new-tokens", str(int(max_new_tokens)), "--json"]
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, env=_env())
        except subprocess.TimeoutExpired:
            raise RunError(f"sampling took longer than {timeout} s and was stopped") from None
    finally:
        os.unlink(prompt_file)
    if proc.returncode != 0:
        raise RunError(f"sampling failed (exit {proc.returncode}):\n{_tail(proc.stderr) or '(no output)'}")
    for line in reversed(proc.stdout.strip().splitlines()):  # the JSON is the last line
        try:
            out = json.loads(line)
        except ValueError:
            continue
        if isinstance(out, dict) and "text" in out:
            return out
    raise RunError(f"sampling printed no JSON result:\n{_tail(proc.stdout + proc.stderr)}")


def export(run_dir: str, out_dir: str, timeout: float | None = None) -> str:
    """Run the exporter; returns its stdout. Raises RunError with stderr's tail on failure."""
    cmd = [sys.executable, "-m", EXPORT_MODULE, run_dir, "--out", os.path.abspath(out_dir)]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        raise RunError(f"export took longer than {timeout} s and was stopped") from None
    if proc.returncode != 0:
        raise RunError(f"export failed (exit {proc.returncode}):\n{_tail(proc.stderr) or '(no output)'}")
    return proc.stdout
