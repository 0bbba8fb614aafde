"""The Jupyter server extension: `/gemma-ft/api/...` for the JupyterLab extension.

Enabled by etc/jupyter/jupyter_server_config.d/gemma_ft_widgets.json, which `pip install`
puts in place (pyproject's data-files). It reads the workspaces' files and the process table
only; it holds no run state (RunManager's metrics cache at most), so a restarted server
answers exactly as before. See handlers.py for the routes, settings.py for `c.GemmaFT`.
"""

from __future__ import annotations

from .. import __version__  # noqa: F401 (`jupyter server extension list` shows it)

LABEXTENSION_NAME = "gemma-ft-widgets"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "gemma_ft_widgets.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """For `jupyter labextension develop`: the built extension inside this package."""
    return [{"src": "../labextension", "dest": LABEXTENSION_NAME}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .handlers import register
    from .settings import GemmaFT

    settings = GemmaFT(parent=serverapp)
    register(serverapp.web_app, settings.workspace_set(serverapp.root_dir))
    serverapp.log.info("gemma_ft_widgets: /gemma-ft/api/ serves workspaces %s",
                       ", ".join(settings.resolved(serverapp.root_dir)))


# jupyter_server < 2 looked for this name.
load_jupyter_server_extension = _load_jupyter_server_extension
