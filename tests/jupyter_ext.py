"""The Jupyter extension in a throw-away Jupyter: what `pip install` puts in sys.prefix (the
server extension's switch, the built labextension), put into a LabServer's own config and data
folders instead, so the tests do not depend on how the venv was set up."""

from __future__ import annotations

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CONFIG = os.path.join(ROOT, "jupyter-config", "server-config", "gemma_ft_widgets.json")
LABEXTENSION = os.path.join(ROOT, "gemma_ft_widgets", "labextension")
LABEXTENSION_NAME = "gemma-ft-widgets"


def package_env(env: dict | None = None) -> dict:
    """`env` plus PYTHONPATH with this checkout first: the server and its kernels import it."""
    out = dict(env or {})
    rest = [p for p in (out.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")).split(os.pathsep) if p]
    out["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in rest if p != ROOT])
    return out


def install_into(server) -> None:
    """Enable the server extension and link the labextension in `server`'s throw-away folders."""
    confd = os.path.join(server.env["JUPYTER_CONFIG_DIR"], "jupyter_server_config.d")
    os.makedirs(confd, exist_ok=True)
    shutil.copy(SERVER_CONFIG, confd)
    labext = os.path.join(server.env["JUPYTER_DATA_DIR"], "labextensions")
    os.makedirs(labext, exist_ok=True)
    link = os.path.join(labext, LABEXTENSION_NAME)
    if not os.path.islink(link):
        os.symlink(LABEXTENSION, link)
