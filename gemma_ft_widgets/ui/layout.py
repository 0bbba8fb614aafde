"""Rows that fit a narrow notebook: the panel at 800 px had its Upload button and active-run
header pushed off-screen, its confirm buttons cut ("Yes, s…"), and a long dataset error
squeezing the path field. A `row` wraps its children to the next line instead of shrinking or
overflowing them, and `keep_size` stops a flex row from squeezing a widget (it still never
grows wider than its container).
"""

from __future__ import annotations

import ipywidgets as w

# The width of the container, less the margin every widget has on each side: "100%" was 4 px
# too wide (a horizontal scrollbar under the data preview at 1400 px).
FULL = "calc(100% - 2 * var(--jp-widgets-margin, 2px))"


def keep_size(widget: w.Widget) -> w.Widget:
    """Stop a flex row from shrinking `widget` (it still never grows wider than its container); returns it."""
    widget.layout.flex = "0 0 auto"
    widget.layout.max_width = FULL
    return widget


def row(children, align: str = "flex-start", gap: str = "0 4px", **layout) -> w.HBox:
    """An HBox whose children wrap when it is too narrow for them."""
    return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", align_items=align, grid_gap=gap,
                                                  max_width=FULL, **layout))


def message(widget: w.Widget) -> w.Widget:
    """A text (an error, a detected format) beside a field: it takes what room is left, and
    at least 16em, going to a line of its own rather than squeezing the field."""
    widget.layout.flex = "1 1 16em"
    widget.layout.min_width = "16em"
    widget.layout.max_width = FULL
    return widget


STYLE = ("<style>"
         # An HTML widget's content does not shrink below its text by default; the title's
         # workspace path is cut with an ellipsis instead of pushing the header off-screen.
         ".gft-panel .gft-title > .widget-html-content{min-width:0;overflow:hidden}"
         ".gft-panel .gft-toast-text > .widget-html-content{min-width:0}"
         "</style>")


def style() -> w.HTML:
    """The panel's few CSS rules (in the page while a panel is shown; scoped to .gft-panel)."""
    widget = w.HTML(STYLE, layout=w.Layout(height="0px", margin="0", overflow="hidden"))
    widget.add_class("gft-style")
    return widget
