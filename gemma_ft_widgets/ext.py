"""IPython extension: `%load_ext gemma_ft_widgets` registers `%gemma_ft [--workspace DIR]`."""

from __future__ import annotations

import argparse
import shlex


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%gemma_ft", add_help=False)
    p.add_argument("--workspace", "-w", default=None)
    p.add_argument("--poll-interval", type=float, default=1.0)
    return p


def gemma_ft(line: str = ""):
    """%gemma_ft [--workspace DIR] [--poll-interval S]: show the fine-tuning control panel."""
    try:
        args = _parser().parse_args(shlex.split(line))
    except SystemExit:
        print("usage: %gemma_ft [--workspace DIR] [--poll-interval SECONDS]")
        return None
    from .ui import ControlPanel

    # Returned, so the cell displays it (and a second %gemma_ft shows a second, agreeing view).
    return ControlPanel(workspace=args.workspace, poll_interval=args.poll_interval)


def load_ipython_extension(ipython) -> None:
    """`%load_ext gemma_ft_widgets`: register the `%gemma_ft` line magic."""
    ipython.register_magic_function(gemma_ft, magic_kind="line", magic_name="gemma_ft")
