"""What the curves show, computed from a run's columns: EMA smoothing as TensorBoard does it,
throughput with its outliers clipped, and the x-axis as steps, tokens seen or wall time.

Pure numpy, and incremental: a series only grows, so
`Incremental` keeps each transform's state at the last point and a refresh computes only the
appended points (the panel redraws every poll; a first attach to a long run is one pass).
"""

from __future__ import annotations

import math

import numpy as np

from .series import Growable

SMOOTHING = 0.6  # TensorBoard's default weight
MAX_SMOOTHING = 0.999
CLIP_WINDOW = 50  # throughput: each point is compared with the median of the last 50
CLIP_FACTOR = 1.5  # and kept within [median / 1.5, median × 1.5]: a real change shows within 25 points
X_AXES = ("step", "tokens", "wall time")


_TINY = 1e-17  # a weight's power below this is nothing next to a float64's last digit
_KERNEL_MAX = 128  # up to this many taps, the EMA is a convolution; beyond, blocks
_SCALE_MAX = 1e12  # the largest w^-k a block scales its points by


def _ema_filter(x: np.ndarray, w: float, last: float) -> np.ndarray:
    """acc[i] = w·acc[i-1] + (1-w)·x[i], acc[-1] = `last`, for 0 < w < 1, in numpy.
    (scipy.signal.lfilter does the same, but importing scipy.signal took 1.5 s of the first
    attach: benchmarks/import_attach.py.) A weight forgotten within _KERNEL_MAX points is a
    truncated convolution; a larger one runs in blocks of B points, each in closed form,
    acc[k] = w^(k+1)·carry + (1-w)·w^k·cumsum(w^-j·x[j]), B kept so that w^-B <= _SCALE_MAX."""
    n = len(x)
    taps = math.ceil(math.log(_TINY) / math.log(w))
    if taps <= _KERNEL_MAX:
        kernel = (1.0 - w) * w ** np.arange(taps)
        return np.convolve(x, kernel)[:n] + w ** np.arange(1, n + 1) * last  # what `last` still weighs
    block = max(1, min(4096, int(math.log(_SCALE_MAX) / -math.log(w))))
    j = np.arange(block)
    up, down = w ** -j, w ** j  # w^-j and w^j for the block's positions
    out = np.empty(n)
    carry = last
    for start in range(0, n, block):
        xs = x[start:start + block]
        k = len(xs)
        acc = w * down[:k] * carry + (1.0 - w) * down[:k] * np.cumsum(up[:k] * xs)
        out[start:start + k] = acc
        carry = acc[-1]
    return out


def ema(y, weight: float, state: tuple[float, int] = (0.0, 0)) -> tuple[np.ndarray, tuple[float, int]]:
    """TensorBoard's smoothing: last = last·w + (1-w)·y over the finite points, debiased by
    1 - w^count (so the line starts at the first value, not at 0); a non-finite point passes
    through as it is and leaves the average alone. `state` = (last, count) carries it on."""
    y = np.asarray(y, dtype=float)
    out = y.copy()
    last, count = state
    ok = np.isfinite(y)
    if weight <= 0 or not ok.any():
        return out, (float(y[ok][-1]) if ok.any() else last, count + int(ok.sum()))
    weight = min(weight, MAX_SMOOTHING)
    acc = _ema_filter(y[ok], weight, last)
    counts = count + np.arange(1, len(acc) + 1)
    out[ok] = acc / (1.0 - weight ** counts)
    return out, (float(acc[-1]), int(counts[-1]))


def clip_outliers(y, tail=None) -> tuple[np.ndarray, np.ndarray]:
    """Each point kept within CLIP_FACTOR of the median of itself and the CLIP_WINDOW - 1
    points before it (`tail`: those of earlier calls). A burst of 100-200k tokens/s on a
    ~15k line (a step timed across an eval or a checkpoint) no longer sets the scale."""
    y = np.asarray(y, dtype=float)
    tail = np.zeros(0) if tail is None else tail
    if not len(y):
        return y.copy(), tail
    both = np.concatenate([np.full(CLIP_WINDOW - 1 - len(tail), np.nan), tail, y])
    windows = np.lib.stride_tricks.sliding_window_view(both, CLIP_WINDOW)
    # np.median is a partition per row; nanmedian is far slower (1M points: seconds), so it
    # runs only on the rows that hold a NaN (the first ones, a missing value's neighbours).
    med = np.median(windows, axis=1)
    holes = np.flatnonzero(np.isnan(med))
    if len(holes):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window: the point stays
            med[holes] = np.nanmedian(windows[holes], axis=1)
    out = y.copy()
    ok = np.isfinite(med) & (med > 0) & np.isfinite(y)
    out[ok] = np.clip(y[ok], med[ok] / CLIP_FACTOR, med[ok] * CLIP_FACTOR)
    return out, both[-(CLIP_WINDOW - 1):]


def tokens_seen(step, tokens_per_s, step_time_s, state: tuple[float, float] = (0.0, 0.0)):
    """Cumulative tokens at each step event: tokens/s × s/step × the steps since the event
    before (the trainer logs every log_every steps). `state` = (tokens so far, last step)."""
    step = np.asarray(step, dtype=float)
    total, prev = state
    steps = np.diff(np.concatenate([[prev], step]))
    per = np.nan_to_num(np.asarray(tokens_per_s, float) * np.asarray(step_time_s, float) * steps)
    out = total + np.cumsum(np.maximum(per, 0.0))
    return out, (float(out[-1]) if len(out) else total, float(step[-1]) if len(step) else prev)


def wall_time(times, state: float | None = None):
    """Seconds since the first step event (resumes included: the gap between attempts shows)."""
    times = np.asarray(times, dtype=float)
    first = state if state is not None else (float(times[0]) if len(times) else None)
    return (times - first if first is not None else times.copy()), first


class Incremental:
    """A transform of a growing series, applied to the appended points only. `fn(new values...,
    state) -> (out, state)`; `update(key, *columns)` returns the whole output. A new `key` (a
    series, its generation, the transform's settings) or a shorter series starts over."""

    def __init__(self, fn, initial_state):
        self.fn, self.initial = fn, initial_state
        self._key, self._n, self._state, self._out = object(), 0, initial_state, Growable()

    def update(self, key, *columns) -> np.ndarray:
        """The transform of the whole series, computed for the points appended since the last call
        (from the start again after a new `key` or a shorter series)."""
        n = len(columns[0])
        if key != self._key or n < self._n:
            self._key, self._n, self._state, self._out = key, 0, self.initial, Growable()
        if n > self._n:
            out, self._state = self.fn(*(np.asarray(c)[self._n:] for c in columns), self._state)
            self._out.extend(np.asarray(out, dtype=float))
            self._n = n
        return self._out.values
