"""Axis ticks: round, inside the data, and labels that never repeat (ui/ticks.py), and the
figures carrying them."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_ft_widgets.ui import plots, ticks


def d3(value: float, spec: str) -> str:
    """What d3-format prints for the three formats of ticks.FORMATS."""
    if spec == ",d":
        return f"{round(value):,d}"
    if spec == ",~f":
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    assert spec == "~s", spec
    exp = 3 * int(np.floor(np.log10(abs(value)) / 3)) if value else 0
    mantissa = f"{value / 10 ** exp:.6g}"
    return mantissa + {-3: "m", 0: "", 3: "k", 6: "M", 9: "G"}[exp]


@pytest.mark.parametrize("lo, hi, integer, kind", [
    (0, 164, True, "integer"),  # steps: no 33, 66, 98
    (0, 3, True, "integer"),  # few steps: integers only
    (1, 1_000_000, True, "integer"),
    (5.82, 6.25, False, "decimal"),
    (5.901, 5.903, False, "decimal"),  # a flat loss: ".3g" printed 5.9 five times
    (0.0012, 0.0031, False, "decimal"),
    (11_000, 11_600, False, "si"),  # throughput: 11k, 11.1k, ...
    (62_000, 75_000, False, "si"),
    (100, 2e6, False, "si"),
])
def test_ticks_are_round_inside_the_data_and_their_labels_differ(lo, hi, integer, kind):
    values = ticks.nice_ticks(lo, hi, 5, integer)
    assert 2 <= len(values) <= 11
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in values), values
    steps = np.diff(values)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]) + 1e-9)
    assert round(mantissa, 6) in (1, 2, 5)
    if integer:
        assert all(float(v).is_integer() for v in values)
    shown = [d3(v, ticks.FORMATS[kind]) for v in values]
    assert len(set(shown)) == len(shown), shown
    assert all(len(s) <= 9 for s in shown), shown


def test_trimmed_formats_print_round_ticks_briefly():
    assert [d3(v, ",~f") for v in ticks.nice_ticks(5.82, 6.25)] == ["5.9", "6", "6.1", "6.2"]
    assert [d3(v, "~s") for v in ticks.nice_ticks(62_000, 75_000)][:3] == ["62k", "64k", "66k"]


def test_a_constant_series_gets_one_tick_with_its_value():
    assert ticks.nice_ticks(11_600, 11_600, 5) == [11_600]
    assert d3(11_600, ticks.FORMATS["si"]) == "11.6k"
    assert ticks.nice_ticks(4, 4, 5, integer=True) == [4]


def test_a_constant_smoothed_line_gets_one_tick():
    """A constant throughput smoothed by the EMA is constant only up to rounding (5119.99999...,
    5120.00000...): it got seven ticks that all read "5.12k" (the browser test caught it)."""
    from gemma_ft_widgets.ui import curves

    smoothed, _ = curves.ema(np.full(40, 5120.0), 0.6)
    lo, hi = ticks.extent([smoothed, np.full(40, 5120.0)])
    assert ticks.nice_ticks(lo, hi) == [5120.0]
    assert ticks.nice_ticks(5119.9999999, 5120.0000001) == [5120.0]
    assert len(ticks.nice_ticks(5100.0, 5140.0)) > 1  # a real spread still gets its ticks


def test_extent_ignores_nan_and_empty_arrays():
    assert ticks.extent([[np.nan, 2.0, 5.0], [], [np.inf, -1.0]]) == (-1.0, 5.0)
    assert ticks.extent([[np.nan], []]) is None


def test_figures_have_fixed_formats_and_fit_ticks_sets_only_values():
    fig, train, evals = plots.loss_figure()
    assert [a.tick_format for a in fig.axes] == [",d", ",~f"]
    assert plots.throughput_figure()[0].axes[1].tick_format == "~s"
    plots.set_line(train, np.arange(0, 165), 6.2 - np.arange(165) / 400)
    plots.set_line(evals, [50, 100, 150], [6.0, 5.9, 5.85])
    plots.fit_ticks(fig)
    ax, ay = fig.axes
    assert list(ax.tick_values) == [0, 50, 100, 150]
    assert list(ay.tick_values) == [5.8, 5.9, 6.0, 6.1, 6.2]
    sent = []
    for axis in fig.axes:
        axis.observe(lambda ch: sent.append(ch["name"]), names=["tick_values", "tick_format"])
    plots.fit_ticks(fig)
    assert sent == []
