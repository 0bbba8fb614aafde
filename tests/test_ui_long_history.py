"""The panel on a long history written by hand (no processes): the first attach reads it in
bulk and draws it decimated, a refresh after an append puts the new point on screen at a cost
that does not grow with the history, a resume cuts the curves, a re-attach shows it all."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gemma_ft_widgets.runs import RunManager
from gemma_ft_widgets.ui import ControlPanel, plots

RUN = "tiny-20260101-000000"


def step(s: int) -> str:
    return json.dumps({"event": "step", "time": 1.7e9 + s, "step": s, "loss": 1.0 + 1.0 / s + 0.001 * (s % 7),
                       "lr": 3e-4, "tokens_per_s": 1000.0 + s % 13, "step_time_s": 0.5, "elapsed_s": s * 0.5,
                       "device_mem_bytes": None, "host_rss_bytes": 1000 + s}, separators=(",", ":"))


def event(kind: str, **kw) -> str:
    return json.dumps({"event": kind, "time": 1.7e9, **kw}, separators=(",", ":"))


@pytest.fixture
def long_run(tmp_path):
    """A finished run of 40,000 steps (an eval every 100): ~7 MB of metrics."""
    ws = tmp_path / "ws"
    run_dir = ws / RUN
    (run_dir / "checkpoints" / "step_40000").mkdir(parents=True)
    (run_dir / "model_config.json").write_text(json.dumps({"model": "tiny", "max_steps": 40_000}))
    lines = [event("start", attempt=1, resume_step=None, max_steps=40_000, pid=1),
             event("data", train_examples=9, eval_examples=1), event("compile", seconds=1.0)]
    for s in range(1, 40_001):
        lines.append(step(s))
        if s % 100 == 0:
            lines.append(event("eval", step=s, eval_loss=2.0 + 1.0 / s))
    lines.append(event("final", state="FINISHED", step=40_000, checkpoint="checkpoints/step_40000"))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "status.log").write_text("2026-01-01T00:00:00.000000Z FINISHED finished\n")
    (run_dir / "result.json").write_text(json.dumps({
        "state": "FINISHED", "exit_code": 0, "signal": None, "signal_name": None, "reason": "finished",
        "final_step": 40_000, "last_checkpoint": "checkpoints/step_40000",
        "started_at": "2026-01-01T00:00:00.000000Z", "ended_at": "2026-01-01T01:00:00.000000Z",
        "attempt": 1, "trainer_pid": 1}))
    return str(ws), str(run_dir)


def append(run_dir: str, *lines: str) -> None:
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_first_attach_refresh_resume_and_reattach(long_run):
    ws, run_dir = long_run
    p = ControlPanel(ws, poll=False, max_points=600)
    try:
        d = p.dashboard
        assert p.view == "finished" and p.run_dir == run_dir
        x, y = np.asarray(d.loss_line.x), np.asarray(d.loss_line.y)
        assert len(x) <= 600 and x[0] == 1 and x[-1] == 40_000
        assert y.max() == pytest.approx(2.001)  # step 1: the peak survives decimation
        assert len(d.eval_line.x) == 400 and d.eval_line.x[-1] == 40_000  # 400 evals: drawn whole
        assert d.kpi("loss") != "—" and d.kpi("host_mem") != "—"
        series = p._series[run_dir]
        assert len(series) == 40_000 and series.latest("host_rss_bytes") == 41_000

        # Appended steps: each refresh draws the new last point, decimated the same way.
        for s in range(40_001, 40_051):
            append(run_dir, step(s))
            p.refresh()
            x = np.asarray(d.loss_line.x)
            assert x[-1] == s and len(x) <= 600 and x[0] == 1
        fresh = plots.Decimator(600).update(series.step.values, series.loss.values)
        np.testing.assert_array_equal(np.asarray(d.loss_line.x), fresh[0])
        np.testing.assert_array_equal(np.asarray(d.throughput_line.y),
                                      plots.Decimator(600).update(series.step.values, series.tokens_per_s.values)[1])

        # A resume from step 20,000: the curves are cut there, then go on.
        append(run_dir, event("start", attempt=2, resume_step=20_000, max_steps=40_000, pid=2),
               step(20_001), step(20_002))
        p.refresh()
        x = np.asarray(d.loss_line.x)
        assert x[-1] == 20_002 and x.max() == 20_002 and len(x) <= 600 and np.all(np.diff(x) > 0)
        assert np.asarray(d.eval_line.x).max() == 20_000
    finally:
        p.close()

    # A new panel (a re-run cell, a new kernel): the whole history again, from the first step.
    again = ControlPanel(ws, poll=False, max_points=600)
    try:
        x = np.asarray(again.dashboard.loss_line.x)
        assert x[0] == 1 and x[-1] == 20_002 and len(x) <= 600
        assert again._series[run_dir].offset == os.path.getsize(os.path.join(run_dir, "metrics.jsonl"))
    finally:
        again.close()


def test_status_of_a_long_history_reads_its_end(long_run):
    ws, run_dir = long_run
    st = RunManager(ws).status()
    assert st.state.value == "FINISHED" and st.step == 40_000 and st.max_steps == 40_000
    assert st.loss == pytest.approx(1.0 + 1.0 / 40_000 + 0.001 * (40_000 % 7))
    assert st.eval_loss == pytest.approx(2.0 + 1.0 / 40_000)
    assert st.metrics_offset == os.path.getsize(os.path.join(run_dir, "metrics.jsonl"))
