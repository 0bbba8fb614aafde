"""IPython extension: `%load_ext gemma_ft_widgets` registers `%gemma_ft [--workspace DIR]`."""

from __future__ import annotations

import argparse
import shlex
import sys


def in_colab() -> bool:
    return "google.colab" in sys.modules


_colab_done = False


def enable_colab_widgets(out=print) -> bool:
    """Colab renders third-party widgets (bqplot) only with its custom widget manager on.

    Done once per kernel, by every ControlPanel and by %gemma_ft; a no-op elsewhere.
    """
    global _colab_done
    if not in_colab() or _colab_done:
        return False
    _colab_done = True
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except Exception as e:  # an old Colab: say so instead of failing the panel
        out(f"gemma_ft_widgets: could not enable Colab's custom widget manager ({e}); "
            "plots may not render.")
        return False
    out("gemma_ft_widgets: enabled Colab's custom widget manager so the bqplot charts render.")
    return True


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
    ipython.register_magic_function(gemma_ft, magic_kind="line", magic_name="gemma_ft")
