"""Installing into a Colab / Kaggle-like runtime keeps its jax, and trains there.

Each leg builds a venv as those runtimes come: jax, jaxlib and the CUDA plugin at one end of
the supported range, the plugin installed with --no-deps (the runtime brings its CUDA
libraries itself). Then it installs this project the way notebook 03 and the README tell a
user to (the runtime's own jax and jaxlib named beside it, no constraints file), and asserts
that jax, jaxlib and the plugin are untouched and `pip check` is clean.

Why jax and jaxlib are named: without them, at the old end pip takes the newest flax in range
(0.12.12, which needs jax>=0.11.1) and upgrades jax 0.10 to 0.12 beneath the 0.10 CUDA
plugin. This test found that; a range cannot express "the jax already installed". In the same venv it trains `tiny` to FINISHED with the real trainer
and runs the stack's smoke tests: the CI matrix over the jax range.

Minutes per leg (a venv of ~4 GB, mostly from pip's cache after the README's set-up); skip
with `-m "not install"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The two ends of the range pyproject.toml states for jax (>=0.10,<0.13).
LEGS = {"oldest": "0.10.0", "newest": "0.12.0.1"}
RUNTIME = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt")
SMOKE = ["tests/test_stack.py", "tests/test_config.py",
         "tests/test_package.py::test_import_does_not_pull_in_jax",
         "tests/test_package.py::test_console_script_is_installed"]

# Each leg installs ~230 packages (~4 GB): minutes, more on a busy machine.
pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.timeout(2400)]


def sh(*cmd, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} -> {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def versions(python) -> dict[str, str]:
    code = ("import json; from importlib import metadata as m; out = {}\n"
            f"for n in {RUNTIME!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    return json.loads(sh(python, "-c", code).stdout)


@pytest.fixture(scope="module", params=sorted(LEGS))
def runtime(request, tmp_path_factory):
    """(venv python, jax version): a Colab-like venv with this project installed into it."""
    jax = LEGS[request.param]
    venv = tmp_path_factory.mktemp(f"colab-{request.param}") / "venv"
    sh(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    py = venv / "bin" / "python"
    # --no-compile: byte-compiling ~230 packages was a large share of each leg's minutes on 2
    # cores, and says nothing about what is tested (versions kept, pip check, training).
    pip = (py, "-m", "pip", "install", "-q", "--no-compile")
    sh(*pip, "--upgrade", "pip")
    sh(*pip, f"jax=={jax}", f"jaxlib=={jax}")
    sh(*pip, "--no-deps", f"jax-cuda12-plugin=={jax}", f"jax-cuda12-pjrt=={jax}")
    before = versions(py)
    assert before == {n: jax for n in RUNTIME}
    # What a user runs (README, notebook 03): the project, and the runtime's own jax kept.
    sh(*pip, ROOT, *(f"{n}=={v}" for n, v in before.items() if n in ("jax", "jaxlib")), "pytest")
    return py, before


def test_installing_keeps_the_runtimes_jax_and_pip_check_is_clean(runtime):
    py, before = runtime
    assert versions(py) == before
    sh(py, "-m", "pip", "check")


def test_tiny_trains_to_finished_and_the_smoke_tests_pass(runtime, tmp_path):
    py, before = runtime
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMMA_FT_")}
    env["PYTHONPATH"] = ""  # the installed package, not the checkout
    gemma_ft = py.parent / "gemma-ft"
    ws = tmp_path / "ws"
    demo = sh(gemma_ft, "demo", "--steps", "20", "--workspace", ws, env=env, cwd=tmp_path)
    status = json.loads(sh(gemma_ft, "status", "--json", "--workspace", ws, env=env, cwd=tmp_path).stdout)
    assert status["state"] == "FINISHED", demo.stdout[-2000:]
    assert status["step"] == 20 and status["devices"]["platform"] == "cpu"
    doctor = sh(gemma_ft, "doctor", "--workspace", ws, env=env, cwd=tmp_path).stdout
    assert f"jax {before['jax']}" in doctor and f"jax-cuda12-plugin {before['jax']}" in doctor
    sh(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *SMOKE, cwd=ROOT, env=env)
