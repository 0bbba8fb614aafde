"""nbval runs the tutorials here. Their runs go to a fresh temporary workspace (the kernels
inherit GEMMA_FT_WORKSPACE), not to notebooks/gemma_ft_runs: a run left there by an earlier,
interrupted test session must not change what the quickstart starts or what 02 resumes. A
workspace the user set is kept."""

import os
import tempfile

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_workspace: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Runs before the notebook's kernel starts (nbval starts it in the file's own setup).
    if str(item.path).startswith(_HERE + os.sep) and "GEMMA_FT_WORKSPACE" not in os.environ:
        _workspace.append(tempfile.mkdtemp(prefix="gemma-ft-nbval-"))
        os.environ["GEMMA_FT_WORKSPACE"] = _workspace[-1]
