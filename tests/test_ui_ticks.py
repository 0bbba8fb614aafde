"""Axis ticks: round, inside the data, and labels that never repeat (ui/ticks.py), and the
dashboard's figures carrying them."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_ft_widgets.ui import plots, ticks


def labels(values, spec):
    """What d3 would print, for the formats tick_format returns (enough to compare labels)."""
    out = []
    for v in values:
        if spec == ",d":
            out.append(f"{int(v):,d}")
        elif spec.endswith("f"):
            out.append(f"{v:,.{int(spec[2:-1])}f}")
        else:  # ".N~s"
            digits = int(spec[1:-2])
            exp = 3 * int(np.floor(np.log10(abs(v)) / 3)) if v else 0
            out.append(f"{v / 10 ** exp:.{digits}g}{ {0: '', 3: 'k', 6: 'M', 9: 'G'}[exp]}")
    return out


@pytest.mark.parametrize("lo, hi, integer, si", [
    (0, 164, True, False),  # steps: no 33, 66, 98
    (0, 3, True, False),  # few steps: integers only
    (5.82, 6.25, False, False),
    (5.901, 5.903, False, False),  # a flat loss: ".3g" printed 5.9 five times
    (0.0012, 0.0031, False, False),
    (11_000, 11_600, False, True),  # throughput: 11k, 11.2k, ...
    (62_000, 75_000, False, True),
    (100, 2e6, False, True),
    (1, 1_000_000, True, False),
])
def test_ticks_are_round_inside_the_data_and_their_labels_differ(lo, hi, integer, si):
    values = ticks.nice_ticks(lo, hi, 5, integer)
    assert 2 <= len(values) <= 7
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in values), values
    steps = np.diff(values)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]) + 1e-9)
    assert round(mantissa, 6) in (1, 2, 5)
    if integer:
        assert all(float(v).is_integer() for v in values)
    shown = labels(values, ticks.tick_format(values, si))
    assert len(set(shown)) == len(shown), shown
    assert all(len(s) <= 9 for s in shown), shown


def test_a_constant_series_gets_one_tick_with_its_value():
    values = ticks.nice_ticks(11_600, 11_600, 5)
    assert values == [11_600]
    assert labels(values, ticks.tick_format(values, si=True)) == ["11.6k"]
    assert ticks.nice_ticks(4, 4, 5, integer=True) == [4]


def test_extent_ignores_nan_and_empty_arrays():
    assert ticks.extent([[np.nan, 2.0, 5.0], [], [np.inf, -1.0]]) == (-1.0, 5.0)
    assert ticks.extent([[np.nan], []]) is None


def test_fit_ticks_sets_the_figures_axes_and_sends_nothing_when_unchanged():
    fig, train, evals = plots.loss_figure()
    plots.set_line(train, np.arange(0, 165), 6.2 - np.arange(165) / 400)
    plots.set_line(evals, [50, 100, 150], [6.0, 5.9, 5.85])
    plots.fit_ticks(fig)
    ax, ay = fig.axes
    assert list(ax.tick_values) == [0, 50, 100, 150] and ax.tick_format == ",d"
    assert list(ay.tick_values) == [5.8, 5.9, 6.0, 6.1, 6.2] and ay.tick_format == ",.1f"
    sent = []
    ax.observe(lambda ch: sent.append(ch["name"]), names=["tick_values", "tick_format"])
    plots.fit_ticks(fig)
    assert sent == []
