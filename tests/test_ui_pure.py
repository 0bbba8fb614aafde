"""The panel's pure parts: decimation, run series, the poller thread, formatting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gemma_ft_widgets.ui import fmt, plots
from gemma_ft_widgets.ui.poller import Poller
from gemma_ft_widgets.ui.series import RunSeries


# -- decimation ----------------------------------------------------------------------------
def test_decimate_leaves_short_series_alone():
    x, y = np.arange(10.0), np.random.rand(10)
    dx, dy = plots.decimate(x, y, 100)
    assert np.array_equal(dx, x) and np.array_equal(dy, y)


@pytest.mark.parametrize("n,max_points", [(5000, 2000), (1_000_000, 2000), (2001, 2000), (10_000, 7)])
def test_decimate_bounds_and_keeps_shape(n, max_points):
    rng = np.random.default_rng(0)
    x = np.arange(n, dtype=float)
    y = np.sin(x / 300) + rng.normal(0, 0.1, n)
    y[n // 3] = 50.0  # a spike that must survive
    y[2 * n // 3] = -50.0
    dx, dy = plots.decimate(x, y, max_points)
    assert len(dx) == len(dy) <= max(max_points, 4)
    assert dx[0] == x[0] and dx[-1] == x[-1]  # first and last kept
    assert dy.max() == 50.0 and dy.min() == -50.0  # extremes kept
    assert np.all(np.diff(dx) > 0)  # still a function of step, in order
    assert set(dx).issubset(set(x))  # only real points, nothing invented


def test_decimate_keeps_bucket_min_and_max():
    x = np.arange(100_000, dtype=float)
    y = np.random.default_rng(1).random(100_000)
    dx, dy = plots.decimate(x, y, 1000)
    # Buckets of consecutive points (between the kept first and last): each one's min and max
    # are kept, so the envelope of any stretch is the data's.
    n, buckets = len(x), (1000 - 2) // 2
    edges = 1 + (np.arange(buckets + 1) * (n - 2)) // buckets
    kept = set(dx.astype(int))
    for a, b in zip(edges[:-1:25], edges[1::25]):
        seg = y[a:b]
        assert a + int(np.argmin(seg)) in kept and a + int(np.argmax(seg)) in kept


def test_decimate_handles_nan():
    x = np.arange(10_000, dtype=float)
    y = np.ones(10_000)
    y[4000:6000] = np.nan  # a diverged stretch
    dx, dy = plots.decimate(x, y, 500)
    assert len(dx) <= 500 and np.isnan(dy).any() and np.nanmax(dy) == 1.0


def test_set_line_sets_decimated_points():
    fig, train, evals = plots.loss_figure()
    plots.set_line(train, np.arange(50_000.0), np.random.rand(50_000), max_points=1000)
    assert len(train.x) == len(train.y) <= 1000
    assert "gft-loss-figure" in fig._dom_classes


def test_overlay_hidden_below_two_series():
    fig = plots.overlay_figure()
    lines = plots.set_overlay(fig, [("a", [1, 2], [3, 4])])
    assert fig.layout.display == "none" and len(lines) == 1
    lines = plots.set_overlay(fig, [("a", [1, 2], [3, 4]), ("b", [1, 2, 3], [5, 6, 7])])
    assert fig.layout.display is None and [list(m.labels) for m in fig.marks] == [["a"], ["b"]]


# -- series --------------------------------------------------------------------------------
def step(n, loss=1.0, **kw):
    return {"event": "step", "step": n, "loss": loss, "lr": 0.1, "tokens_per_s": 100.0,
            "step_time_s": 0.5, **kw}


def test_series_folds_events_incrementally():
    s = RunSeries("/r")
    assert s.extend([{"event": "start", "max_steps": 10, "resume_step": None}]) is False
    assert s.extend([step(1, 3.0), step(2, 2.0), {"event": "eval", "step": 2, "eval_loss": 2.5}])
    assert list(s.step.values) == [1, 2] and list(s.eval_loss.values) == [2.5]
    assert s.extend([step(3, 1.0, host_rss_bytes=123)])
    assert len(s) == 3 and s.latest("host_rss_bytes") == 123
    assert s.eta_s(10) == pytest.approx(7 * 0.5)
    assert s.extend([{"event": "final", "state": "FINISHED"}]) is False and s.final


def test_a_resumed_run_starting_again_is_not_shown_as_compiled_by_its_previous_attempt():
    """The series and a status fold the latest events in one place (runs.metrics.LatestEvents):
    a start drops the previous attempt's compile, final and phase. The series used to keep the
    old compile, so a resume's STARTING read "compiled in 0.0 s; first step…" while it loaded."""
    from types import SimpleNamespace

    from gemma_ft_widgets.runs.metrics import LatestEvents
    from gemma_ft_widgets.ui.dashboard import Dashboard

    first = [{"event": "start", "attempt": 1, "resume_step": None}, {"event": "compile", "seconds": 1.5},
             step(1), step(2), {"event": "final", "state": "ABORTED", "step": 2}]
    resumed = [{"event": "start", "attempt": 2, "resume_step": 2}, {"event": "phase", "phase": "restore", "step": 2}]
    s = RunSeries("/r")
    s.extend(first)
    assert s.last_compile["seconds"] == 1.5 and s.final["state"] == "ABORTED"
    s.extend(resumed)
    assert s.last_compile is None and s.final is None and s.last_start["attempt"] == 2
    folded = LatestEvents()
    for e in first + resumed:
        folded.feed(e)
    assert [folded[k] for k in ("compile", "final", "start", "phase")] == \
        [s.last_compile, s.final, s.last_start, s.last_phase]
    status = SimpleNamespace(foreign_host=None, stalled_s=None, lock_missing=False, reason="", phase=None)
    text = Dashboard._phase("STARTING", status, s)
    assert "compiled in" not in text and "restoring" in text, text


def test_series_resume_drops_steps_after_the_checkpoint():
    s = RunSeries("/r")
    s.extend([{"event": "start", "resume_step": None}] + [step(i) for i in range(1, 8)]
             + [{"event": "eval", "step": 5, "eval_loss": 1.0}])
    s.extend([{"event": "start", "resume_step": 4}, step(5), step(6)])
    assert list(s.step.values) == [1, 2, 3, 4, 5, 6]
    assert len(s.eval_step) == 0  # the eval at step 5 belonged to the abandoned attempt


def test_series_grows_past_initial_capacity():
    s = RunSeries("/r")
    s.extend([step(i, float(i)) for i in range(1, 5001)])
    assert len(s) == 5000 and s.loss.values[-1] == 5000.0


# -- poller --------------------------------------------------------------------------------
def test_poller_ticks_survives_errors_and_stops_promptly():
    ticks, errors = [], []

    def tick():
        ticks.append(time.monotonic())
        if len(ticks) == 2:
            raise RuntimeError("boom")

    p = Poller(tick, lambda: 0.02, errors.append).start()
    deadline = time.monotonic() + 5
    while len(ticks) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ticks) >= 5 and len(errors) == 1 and "boom" in str(errors[0])
    t0 = time.monotonic()
    assert p.stop()
    assert time.monotonic() - t0 < 1.0 and not p.alive


def test_poller_kick_polls_now_and_long_interval_does_not_delay_stop():
    ticks = []
    p = Poller(lambda: ticks.append(1), lambda: 3600.0).start()
    deadline = time.monotonic() + 5
    while not ticks and time.monotonic() < deadline:
        time.sleep(0.01)
    p.kick()
    while len(ticks) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ticks) == 2
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == "gft-poller" for t in threading.enumerate())


# -- formatting ----------------------------------------------------------------------------
def test_formatting():
    assert fmt.number(None) == fmt.DASH and fmt.number(float("nan")) == "NaN"
    assert fmt.number(1.23456) == "1.235" and fmt.number(3e-5) == "0.00003"
    # As the form's number box (a browser) writes the same value: the lr KPI reads like its field.
    assert fmt.number(3e-4, 3) == "0.0003" and fmt.number(2.9876e-4, 3) == "0.000299"
    assert fmt.number(1.2e-7) == "1.20e-07" and fmt.number(2.0) == "2" and fmt.number(0.0) == "0"
    assert fmt.duration(42) == "42 s" and fmt.duration(185) == "3 min 05 s" and fmt.duration(7440) == "2 h 04 min"
    assert fmt.nbytes(3 * 2**30) == "3.00 GiB" and fmt.nbytes(None) == fmt.DASH
    assert fmt.rate(51200) == "51.2k"
    assert "RUNNING" in fmt.badge("RUNNING") and "&lt;b&gt;" in fmt.pre("<b>")


def test_timestamps_are_local_and_readable(monkeypatch):
    """Issue #20: timestamps were raw ISO UTC with microseconds; transitions newest first."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert fmt.when("2025-01-31T12:00:05.123456Z") == "2025-01-31 13:00:05"
        log = "2025-01-31T12:00:05.1Z STARTING launching\n2025-01-31T12:00:09.9Z RUNNING first step 1 logged"
        assert fmt.transitions(log).splitlines() == ["2025-01-31 13:00:09  RUNNING first step 1 logged",
                                                     "2025-01-31 13:00:05  STARTING launching"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert fmt.count(12500) == "12,500" and fmt.count(None) == fmt.DASH



def test_refusals_are_worded_with_the_panels_own_buttons():
    """The run layer gives a fact and its remedies; the panel words them as its buttons (the
    CLI as commands: remedies.py)."""
    from gemma_ft_widgets.runs import Code, Remedy, RunError, StopReport

    e = RunError("a run is already active: r1 (RUNNING)", Code.ACTIVE, (Remedy.STOP, Remedy.RESTORE_LOCK), "r1", "/ws")
    assert fmt.run_error(e) == ("a run is already active: r1 (RUNNING); stop it with Abort on its dashboard; "
                                "put it back with Restore lock on its dashboard")
    finished = RunError("nothing to resume: r1 FINISHED", Code.NOT_RESUMABLE, (Remedy.EXTEND,), "r1", "/ws")
    assert "`gemma-ft resume r1 --max-steps N` in a terminal" in fmt.run_error(finished)
    unreadable = StopReport(None, nothing_to_stop=True, message="nothing to stop: the lock file is unreadable (x)",
                            remedies=(Remedy.CLEAN,))
    assert fmt.stop_message(unreadable).endswith("; clear it with Clean up")
    assert all(r in fmt._REMEDY_WORDS for r in Remedy)  # every remedy has the panel's words
