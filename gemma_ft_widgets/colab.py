"""Colab: third-party widgets (bqplot) render only with its custom widget manager switched on.

Its own module, below both the panel and the IPython extension, which each call it.
"""

from __future__ import annotations

import sys


def in_colab() -> bool:
    """Whether this kernel runs in Colab (google.colab is imported)."""
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
    except Exception as e:  # noqa: BLE001 (an old Colab: say so instead of failing the panel)
        out(f"gemma_ft_widgets: could not enable Colab's custom widget manager ({e}); "
            "plots may not render.")
        return False
    out("gemma_ft_widgets: enabled Colab's custom widget manager so the bqplot charts render.")
    return True
