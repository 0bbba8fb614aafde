"""The panel's toast banner (front ends without the JupyterLab extension): the notices of
notices.py for runs that end while the panel watches, with real runs of the simulated trainer."""

from __future__ import annotations

import os
import time

from gemma_ft_widgets import notices

from .conftest import verified_processes, wait_state
from .test_ui_panel import until, visible


def test_banner_announces_finished_and_failed_runs_once(make_panel, manager, make_config):
    from gemma_ft_widgets.runs import State

    p = make_panel()
    assert not visible(p.toast) and p.toast.notice is None
    run = manager.start(make_config(max_steps=20))
    until(p, lambda: p.state == "FINISHED", what="FINISHED")
    note = p.toast.notice
    assert visible(p.toast) and note["level"] == "success" and run.name in note["text"]
    assert "Fine-tuning finished" in p.toast.text.value and "20/20" in p.toast.text.value
    p.toast.close_button.click()
    p.refresh()
    assert not visible(p.toast)  # dismissed, and not announced again

    run2 = manager.start(make_config(max_steps=100000))
    wait_state(manager, State.RUNNING)
    verified_processes(manager.workspace)["trainer"].kill()
    until(p, lambda: p.state == "FAILED", what="FAILED")
    assert visible(p.toast) and p.toast.notice["level"] == "error"
    assert run2.name in p.toast.notice["text"] and "SIGKILL" in p.toast.notice["text"]

    # A panel opened afterwards takes the ended run as its baseline: the outcome view says it.
    late = make_panel()
    late.refresh()
    assert late.view == "failed" and not visible(late.toast)


def test_stalled_and_eta_come_from_the_metrics_tail(manager, make_config, monkeypatch):
    from gemma_ft_widgets.runs import State

    monkeypatch.setenv("GEMMA_FT_SIM_HANG", "5")
    manager.start(make_config(max_steps=1000))
    wait_state(manager, State.RUNNING)
    st = until_step(manager, 5)
    prog = notices.progress(st)
    assert prog.step_time_s is not None and prog.eta_s == round((1000 - 5) * prog.step_time_s, 1)
    assert not prog.stalled and notices.notice(st, prog) is None
    later = notices.progress(st, now=time.time() + 3600)  # an hour without a line
    assert later.stalled and later.idle_s > 3000
    note = notices.notice(st, later)
    assert note["level"] == "warning" and note["key"].endswith(":stalled@5") and "1 h" in note["text"]
    # one rule: the notice turns at stall.py's limit for this run, the one `gemma-ft status` uses
    from gemma_ft_widgets import contract, stall

    limit = stall.limit(st.stall_basis_s)
    written = os.stat(os.path.join(st.run_dir, contract.METRICS_NAME)).st_mtime
    assert limit == stall.MIN_STALL_S  # this run's pauses are short: the floor
    assert not notices.progress(st, now=written + limit - 1).stalled
    assert notices.progress(st, now=written + limit + 1).stalled


def until_step(manager, step):
    from .conftest import wait_step

    return wait_step(manager, step)


def test_every_ending_has_its_notice_and_a_live_run_none(tmp_path):
    from gemma_ft_widgets.runs import RunStatus, State

    def status(state, **kw):
        return RunStatus(state, run_dir=str(tmp_path), run_name="tiny-1", attempt=2, step=7, max_steps=10, **kw)

    levels = {s: notices.notice(status(s, reason="why")) for s in State}
    assert {s.value: (n and n["level"]) for s, n in levels.items()} == {
        "IDLE": None, "STARTING": None, "RUNNING": None, "STOPPING": None, "FINISHED": "success",
        "FAILED": "error", "ABORTED": "info", "ORPHANED": "warning"}
    assert levels[State.ORPHANED]["key"] == "tiny-1#2:ORPHANED" and "Resume" in levels[State.ORPHANED]["text"]
    assert "step 7/10" in levels[State.FAILED]["text"] and "why" in levels[State.FAILED]["text"]
    assert notices.progress(status(State.FINISHED)).eta_s is None  # no metrics, nothing ended: no ETA
