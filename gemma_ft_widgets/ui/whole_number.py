"""A text box for a whole number that keeps what the user typed.

ipywidgets' IntText drops a "." as it is typed, so "1.5" typed into Batch size arrived as 15,
silently. This box is FloatText underneath (the browser keeps "1.5"), and its value is an int
whenever the number is whole: the form then reports "must be an integer, got 1.5" next to the
field instead of training with another number than the one typed.
"""

from __future__ import annotations

import ipywidgets as w
import traitlets as t


class WholeNumberText(w.FloatText):
    """`value`: an int for a whole number (8, not 8.0), a float otherwise (refused by the form)."""

    value = t.Union([t.Int(), t.Float()], default_value=0, help="int value").tag(sync=True)

    @t.validate("value")
    def _whole(self, proposal):
        v = proposal["value"]
        if isinstance(v, bool):
            raise t.TraitError(f"expected a number, got {v!r}")
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v)
        return v
