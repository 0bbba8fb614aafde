"""The package's promises about itself: light import, working console script, pinned stack."""

import subprocess
import sys


def run_py(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_does_not_pull_in_jax():
    out = run_py("import sys, gemma_ft_widgets as g; g.TrainingConfig; g.RunManager; g.MODELS;"
                 "print(' '.join(m for m in ('jax','flax','optax','tensorflow','gemma') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "start" in out.stdout
