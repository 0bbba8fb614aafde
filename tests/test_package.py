"""The package's promises about itself: light import, working console script, pinned stack."""

import os
import subprocess
import sys
from importlib import metadata

import pytest


def run_py(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_does_not_pull_in_jax():
    # Nor the export extra: the run manager, the panel and the exporter's front module are light.
    out = run_py("import sys, gemma_ft_widgets as g; g.TrainingConfig; g.RunManager; g.MODELS;"
                 "import gemma_ft_widgets.export, gemma_ft_widgets.ui;"
                 "print(' '.join(m for m in ('jax','flax','optax','tensorflow','gemma','torch','transformers',"
                 "'peft','safetensors','gguf','llama_cpp') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "gemma-ft")  # the entry point pip made
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "start" in out.stdout


def test_binder_pins_the_front_end_the_tests_run_against():
    """binder/requirements.txt and constraints.txt pin the same front end, and it is what is
    installed here (so Binder users get the versions the browser tests passed with)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def pins(name):
        lines = open(os.path.join(root, name), encoding="utf-8").read().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    binder = pins("binder/requirements.txt")
    assert {"jupyterlab", "ipywidgets", "bqplot", "ipykernel"} <= set(binder)
    assert all(pins("constraints.txt").get(name) == version for name, version in binder.items()), binder
    if sys.version_info[:2] != (3, 12):
        pytest.skip("Binder runs Python 3.12 (binder/runtime.txt)")
    installed = {name: metadata.version(name) for name in binder}
    assert installed == binder


def test_the_wheel_ships_the_tiny_models_tokenizer_and_pretrained_base(tmp_path):
    """`tiny` needs its tokenizer and its pretrained weights at run time: both are package data."""
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", root, "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = tmp_path.glob("gemma_ft_widgets-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("tiny_tokenizer.model", "tiny_base.npz", "tiny_base.json", "sample_dataset.jsonl"):
        assert f"gemma_ft_widgets/data/{name}" in names, name
