"""Axis ticks chosen on the kernel side, from the data a figure draws.

bqplot's own choice is poor for training curves: with `num_ticks` it spaces ticks evenly over
the data (steps 0, 33, 66, 98…), and without it a fixed precision either repeats labels over
a small loss range (5.9, 5.9, 5.9) or crowds the axis title with long throughput numbers. So:
round 1-2-5 steps, ticks only inside the data's range (d3 draws ticks outside the domain
too), and per-axis formats that trim zeros (FORMATS): a round tick then prints as few digits
as it has (6.2, 5.9015, 11.5k). The formats are fixed when a figure is built; only the tick
values change later (bqplot's front end sometimes misses a tick_format change that arrives
while it redraws the axis after a data change, and the default format then stays).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

# d3 formats: integers with thousands separators; decimals trimmed of trailing zeros (up to 6
# places); SI prefixes trimmed (5.12k, 40k, 1.5M).
FORMATS = {"integer": ",d", "decimal": ",~f", "si": "~s"}
CONSTANT_SPAN = 1e-6  # a range this small relative to its values is drawn as a constant


def extent(arrays: Iterable[Sequence[float]]) -> tuple[float, float] | None:
    """(min, max) over the finite values of all `arrays`; None when there are none."""
    lo, hi = math.inf, -math.inf
    for a in arrays:
        a = np.asarray(a, dtype=float)
        a = a[np.isfinite(a)]
        if len(a):
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return None if lo > hi else (lo, hi)


def nice_step(span: float, count: int = 5, integer: bool = False) -> float:
    """A 1, 2 or 5 x 10^k step giving about `count` intervals over `span`, rounded the way
    d3's ticks round it (at least 1 when `integer`: steps and counts have no fractional ticks)."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(count, 1)
    base = 10.0 ** math.floor(math.log10(raw))
    error = raw / base
    step = base * (10 if error >= math.sqrt(50) else 5 if error >= math.sqrt(10) else 2 if error >= math.sqrt(2) else 1)
    return max(step, 1.0) if integer else step


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Multiples of a nice step within [lo, hi]; a constant series gets one tick, its value.
    So does a range below the labels' resolution (6 significant digits): a constant smoothed
    line is constant only up to rounding, and its ticks would all read the same."""
    if hi - lo <= CONSTANT_SPAN * max(abs(lo), abs(hi)):
        mid = (lo + hi) / 2
        return [round(mid) if integer else float(f"{mid:.6g}")]
    step = nice_step(hi - lo, count, integer)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    digits = max(0, -math.floor(math.log10(step))) + 1
    return [round(t, digits) for t in ticks] or [lo]


def log_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """1, 2 and 5 × 10^k within [lo, hi] (lo > 0), thinned to about `count`; nice_ticks when
    the range holds fewer than two of them (a narrow range on a log axis)."""
    found = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo * (1 - 1e-9) <= m * 10.0 ** k <= hi * (1 + 1e-9)]
    if len(found) < 2:
        return nice_ticks(lo, hi, 4)
    while len(found) > count:
        found = found[::2]
    return [float(f"{v:.12g}") for v in found]
