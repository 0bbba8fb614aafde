"""gemma_ft_widgets: fine-tune Gemma from a notebook.

    from gemma_ft_widgets import ControlPanel
    ControlPanel()                      # or: %load_ext gemma_ft_widgets, then %gemma_ft

Training runs in a detached process group (see `runs`), so it survives kernel restarts.
Importing this package never imports jax: names are loaded on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "TrainingConfig": "gemma_ft_widgets.config",
    "ConfigError": "gemma_ft_widgets.config",
    "demo_config": "gemma_ft_widgets.config",
    "RunManager": "gemma_ft_widgets.runs",
    "RunStatus": "gemma_ft_widgets.runs",
    "RunError": "gemma_ft_widgets.runs",
    "State": "gemma_ft_widgets.runs",
    "ControlPanel": "gemma_ft_widgets.ui",
    "estimate": "gemma_ft_widgets.estimate",
    "MODELS": "gemma_ft_widgets.models",
}

__all__ = sorted(_LAZY) + ["load_ipython_extension", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gemma_ft_widgets' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """`%load_ext gemma_ft_widgets`: registers the `%gemma_ft` magic."""
    from .ext import load_ipython_extension as load

    load(ipython)


def __dir__():
    return __all__
