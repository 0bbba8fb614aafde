"""`c.GemmaFT`: which workspaces the server extension watches, and when a run counts as stalled."""

from __future__ import annotations

import os

from traitlets import Float, List, Unicode
from traitlets.config import Configurable

from .. import contract, notices
from .workspaces import WorkspaceSet


class GemmaFT(Configurable):
    """The server extension's settings (c.GemmaFT.* in jupyter_server_config)."""

    workspaces = List(Unicode(), help=(
        "Workspaces to watch. Relative paths are relative to the server's root_dir. Default: "
        "$GEMMA_FT_WORKSPACE, else ./gemma_ft_runs (the rule of the panel and the CLI), from the root.")
    ).tag(config=True)
    stall_factor = Float(notices.STALL_FACTOR, help=(
        "A RUNNING run is stalled when it wrote nothing for this many times its longest pause, "
        "seen or expected (gemma_ft_widgets/stall.py) ...")).tag(config=True)
    stall_min_seconds = Float(notices.STALL_MIN_S, help=(
        "... and for at least this many seconds.")).tag(config=True)

    def resolved(self, root_dir: str) -> list[str]:
        """The workspaces as absolute paths (relative ones under `root_dir`), without duplicates."""
        raw = list(self.workspaces) or [os.environ.get(contract.WORKSPACE_ENV) or contract.DEFAULT_WORKSPACE]
        out = []
        for path in raw:
            path = os.path.expanduser(path)
            path = os.path.abspath(path if os.path.isabs(path) else os.path.join(os.path.expanduser(root_dir), path))
            if path not in out:
                out.append(path)
        return out

    def workspace_set(self, root_dir: str) -> WorkspaceSet:
        """A WorkspaceSet of the resolved workspaces, with the stall settings."""
        return WorkspaceSet(self.resolved(root_dir), self.stall_factor, self.stall_min_seconds)
