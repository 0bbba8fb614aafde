"""How the Jupyter extension gets installed: `scripts/setup.sh` enables both parts in the venv,
a wheel (what `pip install` gets) carries both as data files and needs no node, and the
committed build of the JupyterLab extension matches its TypeScript sources."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from .jupyter_ext import LABEXTENSION, LABEXTENSION_NAME, ROOT

sys.path.insert(0, os.path.join(ROOT, "labextension"))
from stamp import STAMP, source_hash  # noqa: E402


def jupyter(*args, env: dict, python: str = sys.executable) -> str:
    """`jupyter server ...` / `jupyter labextension ...` as modules of `python` (its own sys.prefix)."""
    module = {"server": "jupyter_server", "labextension": "jupyterlab.labextensions"}[args[0]]
    out = subprocess.run([python, "-m", module, *args[1:]], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # no colours


def clean_env(tmp_path, **extra) -> dict:
    """No user-level Jupyter config or data: only what the environment itself installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "GEMMA_FT_"))}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / name.lower())
    env.update(extra)
    return env


def assert_enabled(env: dict, python_package: bool, python: str = sys.executable) -> None:
    server = jupyter("server", "extension", "list", env=env, python=python)
    assert "gemma_ft_widgets.server enabled" in server, server
    assert re.search(r"gemma_ft_widgets\.server [\d.]+ OK", server), server  # imported and validated
    lab = jupyter("labextension", "list", env=env, python=python)
    line = next((ln for ln in lab.splitlines() if LABEXTENSION_NAME in ln), "")
    assert "enabled" in line and "OK" in line, lab
    if python_package:
        assert "(python, gemma_ft_widgets)" in line, line


def test_the_committed_build_matches_the_sources():
    with open(STAMP) as f:
        stamped = f.read().strip()
    assert stamped == source_hash(), ("gemma_ft_widgets/labextension is older than labextension/: "
                                      "rebuild it (cd labextension && npm run build) and commit it")
    built = os.listdir(os.path.join(LABEXTENSION, "static"))
    assert any(n.startswith("remoteEntry.") for n in built)
    size = sum(os.path.getsize(os.path.join(LABEXTENSION, "static", n)) for n in built)
    assert size < 100_000, f"the committed build grew to {size} bytes"


@pytest.mark.slow
def test_setup_enabled_both_parts_in_this_environment(tmp_path):
    """After scripts/setup.sh, the venv that runs the tests lists both parts as enabled."""
    env = clean_env(tmp_path)
    env.pop("PYTHONPATH", None)
    try:
        assert_enabled(env, python_package=False)
    except AssertionError as e:
        raise AssertionError(f"{e}\n(this environment was set up before the extension existed? "
                             "run `bash scripts/setup.sh` again)") from None


@pytest.mark.slow
def test_a_wheel_installs_both_parts_without_node(tmp_path):
    """`pip install` of the wheel into a fresh environment (no TypeScript, no node): both parts
    land in its sys.prefix and Jupyter lists them as enabled."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "node_modules", "test-artifacts", "build", "*.egg-info", "__pycache__", "gemma_ft_runs",
        ".pytest_cache"))
    shutil.rmtree(src / "labextension" / "src")  # the committed build only
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    wheel = glob.glob(str(tmp_path / "dist" / "*.whl"))[0]
    # A fresh venv that borrows this one's site-packages as a plain path (so Jupyter imports,
    # but this checkout's editable install does not: its .pth finder is not processed).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "borrowed.pth"), "w") as f:
        f.write(sysconfig.get_path("purelib") + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    env = clean_env(tmp_path)
    env.pop("PYTHONPATH", None)
    imported = subprocess.run([python, "-c", "import gemma_ft_widgets.server as s; print(s.__file__)"],
                              capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert imported.stdout.strip().startswith(purelib), imported  # the wheel's copy is the one checked
    assert os.path.isfile(venv / "etc" / "jupyter" / "jupyter_server_config.d" / "gemma_ft_widgets.json")
    assert_enabled(env, python_package=True, python=python)
