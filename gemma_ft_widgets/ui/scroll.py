"""Bring the panel's new view into sight when the panel switches views.

After Start, the long form was replaced by the shorter dashboard but the notebook kept its
scroll position: the user landed on "Logs (empty)" with the KPIs and the curve above, out of
view. ipywidgets has no "scroll to" message, so `ScrollToView` is an HTML widget that draws
a 1-pixel image whose onload scrolls the panel's body to the top of its scrolling ancestor,
only when that top is out of view. Each `request()` draws a new image (a counter in it), so
every switch scrolls once; nothing runs in a front end that does not draw the widget.
"""

from __future__ import annotations

import itertools

import ipywidgets as w

_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
# Runs in the browser with `this` = the image; the panel's body is `.gft-body` of the panel
# holding it. Waits a little, so that the new view is laid out before it is measured.
_SCRIPT = ("var i=this;setTimeout(function(){var p=i.closest('.gft-panel');if(!p)return;"
           "var b=p.querySelector('.gft-body');if(!b)return;var s=b.parentElement;"
           "while(s&&!(s.scrollHeight>s.clientHeight&&/(auto|scroll)/.test(getComputedStyle(s).overflowY)))"
           "s=s.parentElement;var top=s?s.getBoundingClientRect().top:0;"
           "var bottom=s?s.getBoundingClientRect().bottom:window.innerHeight;"
           "var r=b.getBoundingClientRect();if(r.top<top||r.top>bottom-80)b.scrollIntoView({block:'start'});},300)")


class ScrollToView(w.HTML):
    """Invisible; `request()` scrolls its panel's body (`.gft-body`) into view if it is not."""

    def __init__(self, **kwargs):
        super().__init__(layout=w.Layout(height="0px", overflow="hidden", margin="0"), **kwargs)
        self.add_class("gft-scroll-to-view")
        self._count = itertools.count(1)

    def request(self) -> None:
        """Draw a new image, whose onload scrolls the panel's body into view if it is out of it."""
        self.value = (f'<img data-n="{next(self._count)}" src="{_GIF}" alt="" width="1" height="1" '
                      f'onload="{_SCRIPT}">')
