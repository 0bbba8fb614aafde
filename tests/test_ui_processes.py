"""Issue 16: the dashboard lists each trainer process of a multi-process run (process, pid,
alive, how it ended), kernel side: a real panel polling a real 2-process run (the simulated
trainer), a real SIGKILL of process 1."""

from __future__ import annotations

import os
import signal

from gemma_ft_widgets.runs import lockfile

from .test_ui_panel import start, until, visible


def test_dashboard_shows_each_trainer_process_alive_then_how_it_ended(make_panel, workspace):
    p = make_panel()
    start(p, num_processes=2, batch_size=2, max_steps=100000)
    view = p.dashboard.processes
    until(p, lambda: 'data-process="1"' in view.value, what="both processes on the dashboard")
    trainers = lockfile.read_lock(workspace).data["trainers"]
    assert visible(view) and view.value.count(">alive</td>") == 2
    for t in trainers:
        assert f"<td>{t['pid']}</td>" in view.value

    os.kill(trainers[1]["pid"], signal.SIGKILL)  # ours: started by this test's panel
    until(p, lambda: p.state == "FAILED", timeout=60, what="FAILED")
    until(p, lambda: "signal SIGKILL" in view.value, what="how process 1 ended")
    assert ">alive</td>" not in view.value and visible(view)


def test_a_one_process_run_shows_no_process_table(make_panel, workspace):
    p = make_panel()
    start(p, num_processes=1, max_steps=100000)
    until(p, lambda: p.state == "RUNNING", what="RUNNING")
    assert not visible(p.dashboard.processes) and p.dashboard.processes.value == ""
