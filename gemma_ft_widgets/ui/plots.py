"""bqplot figures of the panel, and the decimation that keeps long histories cheap to draw.

`decimate(x, y, max_points)` keeps the first and last point and, per bucket of consecutive
points, the minimum and the maximum (in their original order), so spikes and the overall
shape survive while a million steps draw as a couple of thousand points. Figures are only
changed by setting traits, inside `hold_sync()` so x and y arrive in the browser together.
"""

from __future__ import annotations

from typing import Sequence

import bqplot as bq
import ipywidgets as w
import numpy as np

MAX_POINTS = 2000
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def decimate(x: Sequence[float], y: Sequence[float], max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of (x, y) that keep its shape (min/max per bucket).

    x is assumed sorted (steps). The first and last points are always kept; NaNs are kept
    only where a whole bucket is NaN (a diverged run still shows where it diverged).
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
    keep = np.empty(2 * buckets + 2, dtype=np.int64)
    keep[0], k = 0, 1
    nan = np.isnan(y)
    if not nan.any():
        # Vectorised: per-bucket argmin/argmax with reduceat over the bucket starts.
        starts = edges[:-1]
        mins = np.minimum.reduceat(y[1:n - 1], starts - 1)
        maxs = np.maximum.reduceat(y[1:n - 1], starts - 1)
        for b in range(buckets):
            a, e = edges[b], edges[b + 1]
            seg = y[a:e]
            i = a + int(np.argmax(seg == mins[b]))
            j = a + int(np.argmax(seg == maxs[b]))
            lo, hi = (i, j) if i <= j else (j, i)
            keep[k] = lo
            k += 1
            if hi != lo:
                keep[k] = hi
                k += 1
    else:
        for b in range(buckets):
            a, e = edges[b], edges[b + 1]
            seg = y[a:e]
            if nan[a:e].all():
                keep[k] = a
                k += 1
                continue
            i = a + int(np.nanargmin(seg))
            j = a + int(np.nanargmax(seg))
            lo, hi = (i, j) if i <= j else (j, i)
            keep[k] = lo
            k += 1
            if hi != lo:
                keep[k] = hi
                k += 1
    keep[k] = n - 1
    idx = keep[: k + 1]
    return x[idx], y[idx]


def _figure(title: str, x_label: str, y_label: str, css: str, height: str = "260px",
            y_log: bool = False) -> tuple[bq.Figure, bq.LinearScale, bq.Scale]:
    xs = bq.LinearScale()
    ys = bq.LogScale() if y_log else bq.LinearScale()
    ax = bq.Axis(scale=xs, label=x_label, side="bottom", grid_lines="dashed", num_ticks=6)
    ay = bq.Axis(scale=ys, label=y_label, side="left", grid_lines="dashed",
                 tick_format=".3g", label_offset="40px")
    fig = bq.Figure(marks=[], axes=[ax, ay], title=title, animation_duration=0,
                    fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
                    legend_location="top-right", layout=w.Layout(width="100%", height=height,
                                                                  min_width="280px"))
    fig.add_class(css)
    return fig, xs, ys


def _line(xs, ys, label: str, colour: str, markers: bool = False) -> bq.Lines:
    return bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, labels=[label],
                    colors=[colour], display_legend=True, stroke_width=1.5,
                    marker="circle" if markers else None, marker_size=24 if markers else 64)


def loss_figure() -> tuple[bq.Figure, bq.Lines, bq.Lines]:
    """(figure, train-loss line, eval-loss line) against step."""
    fig, xs, ys = _figure("Loss", "step", "loss", "gft-loss-figure")
    train = _line(xs, ys, "train", COLOURS[0])
    evals = _line(xs, ys, "eval", COLOURS[1], markers=True)
    fig.marks = [train, evals]
    return fig, train, evals


def throughput_figure() -> tuple[bq.Figure, bq.Lines]:
    fig, xs, ys = _figure("Throughput", "step", "tokens / s", "gft-throughput-figure", height="220px")
    line = _line(xs, ys, "tokens/s", COLOURS[2])
    fig.marks = [line]
    return fig, line


def overlay_figure() -> bq.Figure:
    """Loss of several runs, one line each (lines set with `set_overlay`)."""
    fig, xs, ys = _figure("Loss, selected runs", "step", "loss", "gft-overlay-figure")
    fig.layout.display = "none"
    return fig


def set_line(line: bq.Lines, x, y, max_points: int = MAX_POINTS) -> None:
    """Show (x, y) on `line`, decimated; both traits change in one message."""
    dx, dy = decimate(x, y, max_points)
    with line.hold_sync():
        line.x = dx
        line.y = dy


def set_overlay(fig: bq.Figure, series: list[tuple[str, Sequence[float], Sequence[float]]],
                max_points: int = MAX_POINTS) -> list[bq.Lines]:
    """Replace the overlay's lines by one per (label, x, y); hidden when fewer than two."""
    xs, ys = fig.axes[0].scale, fig.axes[1].scale
    old = list(fig.marks)
    lines = []
    for i, (label, x, y) in enumerate(series):
        line = _line(xs, ys, label, COLOURS[i % len(COLOURS)])
        set_line(line, x, y, max_points)
        lines.append(line)
    with fig.hold_sync():
        fig.marks = lines
        fig.layout.display = None if len(series) >= 2 else "none"
    for m in old:
        m.close()
    return lines


def histogram_figure() -> tuple[bq.Figure, bq.Bars, bq.Lines]:
    """(figure, bars of token lengths, vertical line at max_seq_len)."""
    fig, xs, ys = _figure("Tokens per example", "tokens", "examples", "gft-token-histogram",
                          height="220px")
    bars = bq.Bars(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=[COLOURS[0]],
                   padding=0.05, align="center")
    cut = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=["#d62728"],
                   line_style="dashed", labels=["max_seq_len"], display_legend=True)
    fig.marks = [bars, cut]
    return fig, bars, cut


def set_histogram(bars: bq.Bars, cut: bq.Lines, lengths: Sequence[int], max_seq_len: int,
                  bins: int = 30) -> None:
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
