"""The curves' view, kernel side (no browser): EMA smoothing as TensorBoard computes it with
the raw line faint behind, log-scale loss, the x-axis as step / tokens / wall time, the
learning-rate and gradient-norm curves, and throughput with its outliers clipped, whose KPI
is what the line shows."""

from __future__ import annotations

import math

import bqplot as bq
import numpy as np
import pytest

from gemma_ft_widgets.ui import curves, fmt
from gemma_ft_widgets.ui.dashboard import Dashboard
from gemma_ft_widgets.ui.series import RunSeries


def tensorboard_ema(values, weight):
    """TensorBoard's smoothing loop (tensorboard/webapp's line chart), written out."""
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n) if weight < 1 else v)
    return out


def test_ema_is_tensorboards_and_incremental_equals_whole():
    rng = np.random.default_rng(0)
    y = rng.normal(3, 1, 500)
    y[[10, 11, 200]] = np.nan
    for weight in (0.0, 0.6, 0.95):
        whole, _ = curves.ema(y, weight)
        np.testing.assert_allclose(whole, tensorboard_ema(y, weight), rtol=1e-9, equal_nan=True)
        inc = curves.Incremental(lambda v, s: curves.ema(v, weight, s), (0.0, 0))
        for n in (1, 7, 300, 500):
            got = inc.update("k", y[:n])
        np.testing.assert_allclose(got, whole, rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("weight", [0.3, 0.6, 0.9, 0.99, 0.999])
def test_ema_filter_in_numpy_equals_the_loop_over_long_series(weight):
    """The filter under the EMA (a convolution for short memories, closed-form blocks for long
    ones) is the loop, over 20k points, carried on from a previous state."""
    x = np.random.default_rng(2).normal(5, 2, 20_000)
    ref, acc = np.empty_like(x), 1.7
    for i, v in enumerate(x):
        acc = weight * acc + (1 - weight) * v
        ref[i] = acc
    np.testing.assert_allclose(curves._ema_filter(x, weight, 1.7), ref, rtol=1e-10)


def test_throughput_spikes_are_clipped_and_the_rest_kept():
    rng = np.random.default_rng(1)
    y = 15_000 + rng.normal(0, 300, 400)
    spikes = [50, 51, 120, 300]
    y[spikes] = [150_000, 200_000, 120_000, 180_000]
    clipped, _ = curves.clip_outliers(y)
    assert clipped.max() <= curves.CLIP_FACTOR * 15_600 and clipped[spikes].min() > 15_000
    keep = np.setdiff1d(np.arange(400), spikes)
    np.testing.assert_array_equal(clipped[keep], y[keep])
    inc = curves.Incremental(curves.clip_outliers, np.zeros(0))
    for n in (3, 60, 61, 400):
        got = inc.update("k", y[:n])
    np.testing.assert_array_equal(got, clipped)


def step_events(n=200, spikes=(40, 41, 150)):
    evs = [{"event": "start", "time": 1000.0, "attempt": 1, "resume_step": None, "max_steps": n, "pid": 1}]
    for s in range(1, n + 1):
        tps = 200_000.0 if s in spikes else 15_000.0 + 10 * (s % 5)
        evs.append({"event": "step", "time": 1000.0 + 0.5 * s, "step": s, "loss": 3.0 * math.exp(-s / 50) + 0.1,
                    "lr": 1e-3 * min(1, s / 10), "grad_norm": 2.0 / s + (5.0 if s == 77 else 0),
                    "tokens_per_s": tps, "step_time_s": 0.5, "elapsed_s": 0.5 * s})
        if s % 50 == 0:
            evs.append({"event": "eval", "time": 1000.0 + 0.5 * s, "step": s, "eval_loss": 3.0 * math.exp(-s / 50) + 0.2})
    return evs


class Status:
    state, run_name, model, attempt, reason, foreign_host = "RUNNING", "r", "tiny", 1, "", None
    step, max_steps, eval_loss, elapsed_s, devices = 200, 400, None, 10.0, None

    def __init__(self):
        self.loss = self.lr = self.tokens_per_s = None


@pytest.fixture
def shown():
    series = RunSeries("/nonexistent")
    series.extend(step_events())
    d = Dashboard()
    d.show_curves(series, max_points=4000)
    d.show_status(Status(), series)
    yield d, series
    d.close()


def test_smoothing_draws_the_ema_over_a_faint_raw_line(shown):
    d, series = shown
    c = d.curves
    assert c.controls.smoothing == curves.SMOOTHING and c.loss_smooth_line.visible
    np.testing.assert_allclose(c.loss_smooth_line.y, tensorboard_ema(series.loss.values, curves.SMOOTHING))
    np.testing.assert_array_equal(c.loss_line.y, series.loss.values)
    assert list(c.loss_line.opacities) == [0.25] and list(c.loss_smooth_line.opacities or [1.0]) == [1.0]
    c.controls.slider.value = 0.9  # the slider drives the trait
    assert c.controls.smoothing == 0.9
    np.testing.assert_allclose(c.loss_smooth_line.y, tensorboard_ema(series.loss.values, 0.9))
    loss_key = lambda: c.children[1].children[0].value  # noqa: E731 - the key above the loss figure
    assert "train (smoothed)" in loss_key() and "opacity:0.25" in loss_key()
    c.controls.smoothing = 0.0
    assert not c.loss_smooth_line.visible and list(c.loss_line.opacities) == [1.0]
    # The key follows: no smoothed line to name, and the raw line no longer faded (it said
    # "train (smoothed)" at smoothing 0 before).
    assert "smoothed" not in loss_key() and "opacity:0.25" not in loss_key() and ">train<" in loss_key()


def test_log_scale_loss_swaps_the_scale_and_ticks_decades(shown):
    d, _ = shown
    c = d.curves
    c.controls.log_box.value = True
    assert c.controls.log_loss
    assert isinstance(c.loss_figure.axes[1].scale, bq.LogScale)
    assert all(isinstance(m.scales["y"], bq.LogScale) for m in (c.loss_line, c.loss_smooth_line, c.eval_line))
    ticks = list(c.loss_figure.axes[1].tick_values)
    assert ticks and all(float(f"{t:.1e}"[0]) in (1, 2, 5) for t in ticks), ticks
    c.controls.log_loss = False
    assert isinstance(c.loss_figure.axes[1].scale, bq.LinearScale)


def test_the_x_axis_is_step_tokens_or_wall_time(shown):
    d, series = shown
    c = d.curves
    np.testing.assert_array_equal(c.loss_line.x, series.step.values)
    c.controls.x_buttons.value = "tokens"
    tokens = np.cumsum(series.tokens_per_s.values * 0.5)  # one step per event, 0.5 s each
    np.testing.assert_allclose(c.loss_line.x, tokens)
    np.testing.assert_allclose(c.eval_line.x, tokens[[49, 99, 149, 199]])
    assert c.loss_figure.axes[0].label == "tokens" and c.lr_figure.axes[0].label == "tokens"
    c.controls.x_axis = "wall time"
    np.testing.assert_allclose(c.loss_line.x, 0.5 * (series.step.values - 1))
    np.testing.assert_allclose(c.grad_norm_line.x, c.loss_line.x)
    assert c.throughput_figure.axes[0].label == "wall time (s)"


def test_learning_rate_and_gradient_norm_curves(shown):
    d, series = shown
    c = d.curves
    np.testing.assert_allclose(c.lr_line.y, [1e-3 * min(1, s / 10) for s in range(1, 201)])
    np.testing.assert_allclose(c.grad_norm_line.y, series.grad_norm.values)
    assert c.grad_norm_line.y[76] > 5 and c.grad_norm_smooth_line.y[76] < c.grad_norm_line.y[76]


def test_throughput_line_is_clipped_and_smoothed_and_the_kpi_is_its_end(shown):
    d, series = shown
    c = d.curves
    assert max(series.tokens_per_s.values) == 200_000
    assert max(c.throughput_line.y) <= curves.CLIP_FACTOR * 15_050 and max(c.throughput_smooth_line.y) < 1.4 * 15_050
    assert d.kpi("tokens_per_s") == fmt.rate(c.throughput_smooth_line.y[-1]) == fmt.rate(c.throughput_now())
    assert 14_000 < c.throughput_now() < 16_000
    # A spike as the newest point does not jump the KPI.
    series.extend([{"event": "step", "time": 2000.0, "step": 201, "loss": 0.1, "lr": 1e-3, "grad_norm": 0.1,
                    "tokens_per_s": 190_000.0, "step_time_s": 0.5, "elapsed_s": 100.5}])
    d.show_curves(series, max_points=4000)
    d.show_status(Status(), series)
    assert 14_000 < c.throughput_now() < 30_000 and d.kpi("tokens_per_s") == fmt.rate(c.throughput_now())
