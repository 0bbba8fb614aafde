"""bqplot figures of the panel, and the decimation that keeps long histories cheap to draw.

`decimate(x, y, max_points)` keeps the first and last point and, per bucket of consecutive
points, the minimum and the maximum (in their original order), so spikes and the overall
shape survive while a million steps draw as a couple of thousand points. Figures are only
changed by setting traits, inside `hold_sync()` so x and y arrive in the browser together.
"""

from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import ipywidgets as w
import numpy as np

from . import layout, ticks

MAX_POINTS = 2000
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def decimate(x: Sequence[float], y: Sequence[float], max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of (x, y) that keep its shape (min/max per bucket).

    x is assumed sorted (steps). The first and last points are always kept; NaNs are kept
    only where a whole bucket is NaN (a diverged run still shows where it diverged).
    Vectorised: the buckets (near-equal widths between the first and the last point) are laid
    out as the rows of a matrix, so there is no per-bucket Python loop.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n != len(y):
        raise ValueError(f"x and y differ in length ({n} != {len(y)})")
    max_points = max(int(max_points), 4)
    if n <= max_points:
        return x, y
    buckets = (max_points - 2) // 2
    inner = n - 2  # indices 1 .. n-2
    edges = 1 + (np.arange(buckets + 1) * inner) // buckets
    starts, widths = edges[:-1], np.diff(edges)
    cols = np.arange(int(widths.max()))
    idx = starts[:, None] + cols[None, :]
    pad = cols[None, :] >= widths[:, None]  # past a narrower bucket's end
    rows = y[np.minimum(idx, n - 2)]
    rows[pad] = np.nan  # ignored like a NaN (never chosen over a number)
    lo, hi = _row_extrema(rows)
    keep = np.sort(np.stack([starts + lo, starts + hi], axis=1), axis=1).ravel()
    keep = np.concatenate(([0], keep, [n - 1]))
    keep = keep[np.concatenate(([True], np.diff(keep) != 0))]
    return x[keep], y[keep]


def _row_extrema(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column of its first minimum and of its first maximum, ignoring NaNs (as
    np.nanargmin / np.nanargmax); 0 and 0 for a row that is all NaN."""
    nan = np.isnan(rows)
    if not nan.any():
        return rows.argmin(axis=1), rows.argmax(axis=1)
    lo = np.where(nan, np.inf, rows).argmin(axis=1)
    hi = np.where(nan, -np.inf, rows).argmax(axis=1)
    r = np.arange(len(rows))
    # A row of NaNs and a real +inf (or -inf): the NaN stand-in may tie with it and come first.
    for i in np.flatnonzero(nan[r, lo] | nan[r, hi]).tolist():
        if nan[i].all():
            lo[i] = hi[i] = 0
        else:
            lo[i], hi[i] = np.nanargmin(rows[i]), np.nanargmax(rows[i])
    return lo, hi


class Decimator:
    """`decimate` for a series that only grows, at a cost that does not grow with it.

    Buckets have a power-of-two width `w`, fixed from the start of the series, so appending a
    point changes only the last, partial bucket: complete buckets keep their minimum and
    maximum (computed once, vectorised), and when the series outgrows `max_points` the width
    doubles by merging neighbouring buckets, without reading the points again. The first and
    last points are always kept, a bucket's minimum and maximum in their order, NaNs only
    where a whole bucket is NaN; at most `max_points` points (all of them while the series is
    no longer than that).

    `update(x, y, key)` returns the points to draw. `key` names the series and its
    generation: when it changes, or the series got shorter, the state is rebuilt.
    """

    def __init__(self, max_points: int = MAX_POINTS):
        self.max_points = max(int(max_points), 4)
        self._reset(None)

    def _reset(self, key) -> None:
        self._key = key
        self._w = 1  # bucket width
        self._lo = np.zeros(0, dtype=np.int64)  # per complete bucket: index of its minimum
        self._hi = np.zeros(0, dtype=np.int64)  # ... and of its maximum
        self._vlo = np.zeros(0)
        self._vhi = np.zeros(0)
        self._n = 0  # length of the series last seen

    @property
    def width(self) -> int:
        """The current bucket width (points per bucket)."""
        return self._w

    def update(self, x, y, key=None) -> tuple[np.ndarray, np.ndarray]:
        """The points of (x, y) to draw (see the class docstring); ValueError when x and y differ in length."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        n = len(y)
        if n != len(x):
            raise ValueError(f"x and y differ in length ({len(x)} != {n})")
        if key != self._key or n < self._n:
            self._reset(key)
        self._n = n
        if n <= self.max_points:
            return x.copy(), y.copy()
        per = (self.max_points - 2) // 2  # buckets that fit, two points each
        while -(-n // self._w) > per:
            self._double()
        full = n // self._w
        done = len(self._lo)
        if full > done:
            rows = y[done * self._w: full * self._w].reshape(full - done, self._w)
            lo, hi = _row_extrema(rows)
            base = (np.arange(done, full) * self._w)
            r = np.arange(len(rows))
            self._lo = np.concatenate([self._lo, base + lo])
            self._hi = np.concatenate([self._hi, base + hi])
            self._vlo = np.concatenate([self._vlo, rows[r, lo]])
            self._vhi = np.concatenate([self._vhi, rows[r, hi]])
        parts = [np.minimum(self._lo, self._hi), np.maximum(self._lo, self._hi)]
        keep = np.stack(parts, axis=1).ravel()
        tail = y[full * self._w:]
        if len(tail):
            lo, hi = _row_extrema(tail[None, :])
            a, b = full * self._w + int(lo[0]), full * self._w + int(hi[0])
            keep = np.concatenate([keep, [min(a, b), max(a, b)]])
        keep = np.concatenate(([0], keep, [n - 1]))
        keep = keep[np.concatenate(([True], np.diff(keep) != 0))]
        return x[keep], y[keep]

    def _double(self) -> None:
        """Twice the bucket width: merge buckets pairwise (an odd last one is dropped: its
        points are read again as part of the new partial bucket)."""
        pairs = len(self._lo) // 2
        self._w *= 2
        if not pairs:
            self._lo = self._hi = np.zeros(0, dtype=np.int64)
            self._vlo = self._vhi = np.zeros(0)
            return
        a, b = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)
        # The right bucket wins only with a strictly better value, or a number against a NaN:
        # so ties keep the first occurrence, and NaN is kept only where both are NaN.
        right = (self._vlo[b] < self._vlo[a]) | (np.isnan(self._vlo[a]) & ~np.isnan(self._vlo[b]))
        self._lo = np.where(right, self._lo[b], self._lo[a])
        self._vlo = np.where(right, self._vlo[b], self._vlo[a])
        right = (self._vhi[b] > self._vhi[a]) | (np.isnan(self._vhi[a]) & ~np.isnan(self._vhi[b]))
        self._hi = np.where(right, self._hi[b], self._hi[a])
        self._vhi = np.where(right, self._vhi[b], self._vhi[a])


def _figure(title: str, x_label: str, y_label: str, css: str, height: str = "260px",
            y_format: str = "decimal") -> tuple[bq.Figure, bq.LinearScale, bq.LinearScale]:
    xs = bq.LinearScale()
    ys = bq.LinearScale()
    # Tick values come from the kernel (fit_ticks); the formats are fixed here (see ticks.py).
    ax = bq.Axis(scale=xs, label=x_label, side="bottom", grid_lines="dashed", tick_format=ticks.FORMATS["integer"])
    ay = bq.Axis(scale=ys, label=y_label, side="left", grid_lines="dashed",
                 tick_format=ticks.FORMATS[y_format], label_offset="45px")
    fig = bq.Figure(marks=[], axes=[ax, ay], title=title, animation_duration=0,
                    fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
                    legend_location="top-right", layout=w.Layout(width=layout.FULL, height=height,
                                                                  min_width="280px"))
    fig.add_class(css)
    return fig, xs, ys


def _line(xs, ys, label: str, colour: str, markers: bool = False, legend: bool = False) -> bq.Lines:
    """A line; its key is drawn by `key_html` above the figure (bqplot's legend sits inside
    the plot area, over the data), unless `legend`."""
    return bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, labels=[label],
                    colors=[colour], display_legend=legend, stroke_width=1.5,
                    marker="circle" if markers else None, marker_size=24 if markers else 64)


def loss_figure() -> tuple[bq.Figure, bq.Lines, bq.Lines]:
    """(figure, train-loss line, eval-loss line) against step."""
    fig, xs, ys = _figure("Loss", "step", "loss", "gft-loss-figure")
    train = _line(xs, ys, "train", COLOURS[0])
    evals = _line(xs, ys, "eval", COLOURS[1], markers=True)
    fig.marks = [train, evals]
    return fig, train, evals


def add_line(fig: bq.Figure, label: str, colour: str) -> bq.Lines:
    """A new line on `fig`'s scales, drawn over its other marks."""
    line = _line(fig.axes[0].scale, fig.axes[1].scale, label, colour)
    fig.marks = [*fig.marks, line]
    return line


def small_figure(title: str, y_label: str, css: str, colour: str, y_format: str = "decimal"
                 ) -> tuple[bq.Figure, bq.Lines]:
    """A small figure of one curve against step (learning rate, gradient norm)."""
    fig, xs, ys = _figure(title, "step", y_label, css, height="200px", y_format=y_format)
    line = _line(xs, ys, y_label, colour)
    fig.marks = [line]
    return fig, line


def throughput_figure() -> tuple[bq.Figure, bq.Lines]:
    """The throughput figure (tokens/s against step) and its line."""
    fig, xs, ys = _figure("Throughput", "step", "tokens / s", "gft-throughput-figure", height="220px",
                          y_format="si")
    line = _line(xs, ys, "tokens/s", COLOURS[2])
    fig.marks = [line]
    return fig, line


def overlay_figure() -> bq.Figure:
    """Loss of several runs, one line each (lines set with `set_overlay`)."""
    fig, xs, ys = _figure("Loss, selected runs (line: train, dots: eval)", "step", "loss", "gft-overlay-figure")
    fig.layout.display = "none"
    return fig


def fit_ticks(fig: bq.Figure, y_integer: bool = False, y_zero: bool = False, y_log: bool = False) -> None:
    """Round tick values inside the drawn data's range (see ticks.py); x is integer (steps,
    tokens). Call after the marks' data changed; sends nothing when the ticks are the same.
    `y_log`: 1-2-5 ticks of each decade, for a log scale."""
    marks = [m for m in fig.marks if len(m.x) and m.visible]
    xr = ticks.extent(m.x for m in marks)
    yr = ticks.extent([m.y for m in marks] + ([[0.0]] if y_zero and marks else []))
    for axis, r, integer in ((fig.axes[0], xr, True), (fig.axes[1], yr, y_integer)):
        if r is None:
            continue
        log = y_log and axis is fig.axes[1] and r[0] > 0
        values = ticks.log_ticks(r[0], r[1]) if log else ticks.nice_ticks(r[0], r[1], 5, integer)
        if list(axis.tick_values if axis.tick_values is not None else ()) != values:
            axis.tick_values = np.asarray(values, dtype=float)


def set_line(line: bq.Lines, x, y, max_points: int = MAX_POINTS, decimator: Decimator | None = None,
             key=None) -> None:
    """Show (x, y) on `line`, decimated (by `decimator`, incrementally, when given: `key`
    names the series, see `Decimator.update`); both traits change in one message."""
    dx, dy = decimate(x, y, max_points) if decimator is None else decimator.update(x, y, key)
    with line.hold_sync():
        line.x = dx
        line.y = dy


def set_overlay(fig: bq.Figure, series: list[tuple], max_points: int = MAX_POINTS) -> list[bq.Lines]:
    """Replace the overlay's lines by one per (label, x, y), and with (label, x, y, eval_x,
    eval_y) a dotted eval line in the same colour; hidden when fewer than two."""
    xs, ys = fig.axes[0].scale, fig.axes[1].scale
    old = list(fig.marks)
    lines = []
    for i, (label, x, y, *evals) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        line = _line(xs, ys, label, colour, legend=True)
        set_line(line, x, y, max_points)
        lines.append(line)
        if evals and len(evals[0]):
            ev = _line(xs, ys, f"{label} eval", colour, markers=True)
            ev.line_style, ev.display_legend = "dotted", False
            set_line(ev, evals[0], evals[1], max_points)
            lines.append(ev)
    with fig.hold_sync():
        fig.marks = lines
        fig.layout.display = None if len(series) >= 2 else "none"
    fit_ticks(fig)
    for m in old:
        m.close()
    return lines


def histogram_figure() -> tuple[bq.Figure, bq.Bars, bq.Lines]:
    """(figure, bars of token lengths, vertical line at max_seq_len)."""
    fig, xs, ys = _figure("Tokens per example", "tokens", "examples", "gft-token-histogram",
                          height="220px", y_format="integer")
    bars = bq.Bars(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=[COLOURS[0]],
                   padding=0.05, align="center")
    # No bqplot legend: its glyph for a dashed two-point line drew broken, over the bars.
    cut = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=["#d62728"],
                   line_style="dashed", labels=["max_seq_len"], display_legend=False)
    fig.marks = [bars, cut]
    return fig, bars, cut


def set_histogram(bars: bq.Bars, cut: bq.Lines, lengths: Sequence[int], max_seq_len: int,
                  bins: int = 30) -> None:
    """Draw the histogram of `lengths` in `bins` bars, and the max_seq_len cut as a vertical line."""
    lengths = np.asarray(lengths, dtype=float)
    if len(lengths) == 0:
        with bars.hold_sync():
            bars.x, bars.y = np.zeros(0), np.zeros(0)
        with cut.hold_sync():
            cut.x, cut.y = np.zeros(0), np.zeros(0)
        return
    hi = max(float(lengths.max()), float(max_seq_len)) + 1
    counts, edges = np.histogram(lengths, bins=bins, range=(0, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    with bars.hold_sync():
        bars.x = centres
        bars.y = counts.astype(float)
    with cut.hold_sync():
        cut.x = np.array([max_seq_len, max_seq_len], dtype=float)
        cut.y = np.array([0.0, float(counts.max()) if counts.max() > 0 else 1.0])


_DASHES = {"dashed": "dashed", "dotted": "dotted", "dash_dotted": "dashed"}


def key_html(fig: bq.Figure) -> str:
    """The figure's key as a line of HTML (a swatch and a label per labelled line), shown
    above the figure so that it never covers the data."""
    items = []
    for mark in fig.marks:
        if not isinstance(mark, bq.Lines) or not mark.labels or not mark.colors or not mark.visible:
            continue
        style = _DASHES.get(mark.line_style, "solid")
        opacity = (mark.opacities or [1.0])[0]
        dot = (f'<span style="display:inline-block;width:6px;height:6px;border-radius:3px;margin-left:-12px;'
               f'margin-right:6px;background:{mark.colors[0]};vertical-align:middle"></span>' if mark.marker else "")
        items.append(f'<span style="white-space:nowrap;margin-right:14px"><span style="display:inline-block;'
                     f'width:18px;border-top:2px {style} {mark.colors[0]};opacity:{opacity};vertical-align:middle;'
                     f'margin-right:4px"></span>{dot}{mark.labels[0]}</span>')
    return f'<div class="gft-key" style="font-size:12px;color:#444;padding-left:60px">{"".join(items)}</div>'


def keyed(fig: bq.Figure) -> w.VBox:
    """`fig` under its key (see `key_html`), which follows its lines: a hidden line (a smoothed
    one at smoothing 0) leaves the key, and a faded raw line is faded there too."""
    key = w.HTML(key_html(fig))
    key.add_class("gft-figure-key")

    def refresh(_=None):
        value = key_html(fig)
        if key.value != value:
            key.value = value

    def follow(_=None):
        for mark in fig.marks:
            if isinstance(mark, bq.Lines) and not getattr(mark, "_gft_keyed", False):
                mark._gft_keyed = True
                mark.observe(refresh, ["visible", "opacities", "labels", "colors"])
        refresh()

    fig.observe(follow, "marks")
    follow()
    box = w.VBox([key, fig], layout=w.Layout(width=layout.FULL))
    return box
