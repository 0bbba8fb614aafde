"""The control panel against real workspaces and real runs (the simulated trainer), headless:
panels are built, buttons clicked with .click(), and widget values asserted."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager
from gemma_ft_widgets.ui import ControlPanel

from .conftest import wait_for


def configure(panel: ControlPanel, **values) -> None:
    values = {"max_steps": 60, "warmup_steps": 0, "eval_every": 10, "checkpoint_every": 20, **values}
    for name, value in values.items():
        panel.form.fields[name].value = value
    assert panel.form.valid, {k: v.value for k, v in panel.form.errors.items() if v.value}


def until(panel: ControlPanel, predicate, timeout: float = 30.0, what: str = "condition"):
    """Refresh the panel (one synchronous poll) until `predicate()` holds."""
    def check():
        panel.refresh()
        return predicate()
    return wait_for(check, timeout, interval=0.05, what=what)


def start(panel: ControlPanel, **values) -> str:
    configure(panel, **values)
    panel.form.start_button.click()
    assert panel.wait_actions(30)
    panel.refresh()
    assert panel.view == "dashboard", panel.form.message.value
    return panel.run_dir


def n_step_events(run_dir: str) -> int:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return sum(1 for line in f if '"event":"step"' in line)


def visible(widget) -> bool:
    return widget.layout.display != "none"


# -- IDLE ----------------------------------------------------------------------------------
def test_idle_workspace_shows_the_form(make_panel, workspace):
    p = make_panel()
    assert (p.state, p.view, p.run_dir) == ("IDLE", "form", "")
    assert p.body.children == (p.form,)
    assert p.form.fields["dataset"].value == sample_dataset_path()
    assert p.form.valid and not p.form.start_button.disabled
    assert p.history.model.rows == []
    assert p.playground.generate_button.disabled


def test_missing_workspace_is_idle_and_created_on_start(tmp_path, sim_env, panels):
    ws = tmp_path / "not-yet"
    p = ControlPanel(str(ws), poll=False)
    panels.append(p)
    assert p.view == "form"
    start(p, max_steps=5)
    assert ws.is_dir()
    until(p, lambda: p.state == "FINISHED")


# -- a run, live ---------------------------------------------------------------------------
def test_poller_appends_points_while_the_run_goes(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.03")
    p = make_panel(poll=True, poll_interval=0.1)
    assert p.polling and p.wait_ready(10) and p.view == "form"
    configure(p, max_steps=100)
    p.form.start_button.click()
    wait_for(lambda: p.view == "dashboard", 30, what="dashboard")
    seen = []
    wait_for(lambda: seen.append(len(p.dashboard.loss_line.x)) or seen[-1] >= 20, 30, what="20 points")
    wait_for(lambda: len(p.dashboard.loss_line.x) > seen[-1] + 5, 30, what="more points")
    assert p.state == "RUNNING"
    d = p.dashboard
    assert visible(d.abort_button) and not visible(d.force_button)
    assert d.kpi("loss") != "—" and d.kpi("tokens_per_s") != "—" and d.kpi("eta") != "—"
    assert d.kpi("host_mem").endswith("MiB") and d.kpi("device_mem") == "CPU"  # not "n/a" (issue #20)
    assert d.progress.max == 100 and 0 < d.progress.value < 100
    assert "RUNNING" in d.badge.value
    assert "gft-state-badge" in d.badge._dom_classes
    wait_for(lambda: p.state == "FINISHED", 30, what="FINISHED")
    assert p.view == "finished"
    assert list(d.loss_line.x)[-1] == 100 and len(d.loss_line.x) == 100
    assert list(d.eval_line.x) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert len(d.throughput_line.x) == 100
    assert d.progress.value == 100 and d.kpi("eta") == "—"
    assert "FINISHED" in d.transitions.value and "STARTING" in d.transitions.value
    assert p.poll_errors == 0, p.messages


def test_starting_shows_the_dashboard_before_the_first_step(make_panel, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "2")
    p = make_panel()
    start(p, max_steps=10)
    until(p, lambda: "data:" in p.dashboard.phase.value, what="the data event")
    assert (p.state, p.view) == ("STARTING", "dashboard")
    assert "STARTING" in p.dashboard.badge.value and p.dashboard.kpi("loss") == "—"
    assert visible(p.dashboard.abort_button) and len(p.dashboard.loss_line.x) == 0
    assert "90 train / 10 eval examples" in p.dashboard.phase.value
    assert "STARTING" in p.active_label.value and p.active_run == p.run_dir
    RunManager(workspace).stop(force=True)


def test_truncated_examples_stay_in_view_while_the_run_trains(make_panel, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_TRUNCATED", "7")
    p = make_panel()
    start(p, max_steps=100_000, max_seq_len=64)
    until(p, lambda: p.state == "RUNNING", what="RUNNING")
    assert "7 of 100 examples truncated to max_seq_len 64" in p.dashboard.phase.value
    RunManager(workspace).stop(force=True)
    sim_env.setenv("GEMMA_FT_SIM_TRUNCATED", "0")
    q = make_panel()
    start(q, max_steps=100_000)
    until(q, lambda: q.state == "RUNNING", what="RUNNING")
    assert "truncated" not in q.dashboard.phase.value
    RunManager(workspace).stop(force=True)


def test_reattach_shows_the_whole_history(make_panel, workspace, sim_env):
    manager = RunManager(workspace)
    first = make_panel()
    run_dir = start(first, max_steps=3000)
    until(first, lambda: len(first.dashboard.loss_line.x) >= 40, what="40 steps")
    first.close()  # e.g. the kernel restarted; the run goes on
    again = make_panel()  # builds, and polls once, in the constructor
    assert again.view == "dashboard" and again.run_dir == run_dir
    shown = len(again.dashboard.loss_line.x)
    assert shown >= 40 and shown <= n_step_events(run_dir)
    assert list(again.dashboard.loss_line.x)[:3] == [1, 2, 3]  # from the first step, not new points only
    manager.stop(force=True)


def test_long_histories_are_decimated(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel(max_points=500)
    run_dir = start(p, max_steps=6000, eval_every=1000, checkpoint_every=3000)
    until(p, lambda: p.state == "FINISHED", 60)
    x = list(p.dashboard.loss_line.x)
    assert n_step_events(run_dir) == 6000
    assert len(x) <= 500 and x[0] == 1 and x[-1] == 6000
    assert len(p.dashboard.throughput_line.x) <= 500


# -- several panels ------------------------------------------------------------------------
def test_two_panels_agree_and_start_in_one_disables_the_other(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.05")
    a, b = make_panel(), make_panel()
    configure(b)
    assert not b.form.start_button.disabled
    run_dir = start(a, max_steps=2000)
    assert not b.form.start_button.disabled  # b has not polled yet
    b.refresh()
    assert b.form.start_button.disabled and b.form.active_run == os.path.basename(run_dir)
    assert b.view == "dashboard" and b.run_dir == run_dir and b.active_run == run_dir
    until(a, lambda: a.state == "RUNNING")
    b.refresh()
    assert b.state == a.state == "RUNNING"
    # Both stop: the second one to get there finds nothing to stop, and both show ABORTED.
    a.dashboard.abort_button.click()
    a.dashboard.confirm_button.click()
    assert a.wait_actions(60)
    a.refresh()
    b.refresh()
    assert a.state == b.state == "ABORTED"
    assert b.form.active_run == "" and not b.form.start_button.disabled


def test_two_panels_pressing_start_together_make_one_run_and_one_error(make_panel, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.05")
    a, b = make_panel(), make_panel()
    configure(a, max_steps=2000)
    configure(b, max_steps=2000)
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=lambda p=p: (barrier.wait(), p.form.start_button.click()))
               for p in (a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert a.wait_actions(30) and b.wait_actions(30)
    runs = [d for d in os.listdir(workspace) if not d.startswith(".") and d != "uploads"]
    assert len(runs) == 1, runs
    messages = [a.form.message.value, b.form.message.value]
    errors = [m for m in messages if "Not started" in m]
    assert len(errors) == 1 and "already active" in errors[0] and runs[0] in errors[0]
    a.refresh()
    b.refresh()
    assert a.run_dir == b.run_dir == os.path.join(workspace, runs[0])
    RunManager(workspace).stop(force=True)


# -- abort ---------------------------------------------------------------------------------
def test_abort_asks_for_confirmation_then_stops_and_can_resume(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.03")
    p = make_panel()
    run_dir = start(p, max_steps=2000, checkpoint_every=1000)
    until(p, lambda: p.state == "RUNNING")
    d = p.dashboard
    assert visible(d.abort_button) and not visible(d.confirm_box)
    d.abort_button.click()
    assert visible(d.confirm_box) and not visible(d.abort_button) and d.confirming
    d.cancel_button.click()  # changed my mind: nothing happens
    assert not visible(d.confirm_box) and visible(d.abort_button)
    p.refresh()
    assert p.state == "RUNNING"
    d.abort_button.click()
    d.confirm_button.click()
    assert visible(d.stopping_label) and "stopping…" in d.stopping_label.value
    assert visible(d.force_button) and not d.force_button.disabled and not visible(d.abort_button)
    assert p.wait_actions(60)
    p.refresh()
    assert (p.state, p.view) == ("ABORTED", "finished")
    o = p.outcome
    assert "Stopped" in o.banner.value and "checkpoints/step_" in o.banner.value
    assert visible(o.resume_button) and visible(o.new_run_button) and visible(o.playground_button)
    assert not visible(o.clean_button) and not visible(d.controls)
    steps_before = len(d.loss_line.x)
    assert steps_before > 0 and "Stopped" in d.message.value and "now ABORTED" in d.message.value
    assert "SIGINT" not in d.message.value and "pid" not in d.message.value  # a user message (#20)
    o.resume_button.click()
    assert p.wait_actions(30)
    until(p, lambda: p.state == "RUNNING" and len(d.loss_line.x) > steps_before + 3, what="resumed steps")
    assert d.message.value == ""  # the stop report of attempt 1 is gone with it (#20)
    st = p.manager.status(run_dir)  # elapsed counts both attempts (#20)
    assert st.wall_s > st.elapsed_s > 0
    assert p.run_dir == run_dir and "attempt 2" in d.run_label.value
    assert list(d.loss_line.x)[:3] == [1, 2, 3]  # the first attempt's curve is kept
    RunManager(os.path.dirname(run_dir)).stop(force=True)


def test_force_kill_when_the_run_ignores_the_stop(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.03")
    sim_env.setenv("GEMMA_FT_SIM_IGNORE_SIGINT", "1")
    p = make_panel(stop_timeout=60)
    other = make_panel()
    start(p, max_steps=5000)
    until(p, lambda: p.state == "RUNNING")
    p.dashboard.abort_button.click()
    p.dashboard.confirm_button.click()
    # Another panel sees STOPPING from the files, with Force kill offered.
    until(other, lambda: other.state == "STOPPING", what="STOPPING in the other panel")
    assert visible(other.dashboard.stopping_label) and visible(other.dashboard.force_button)
    time.sleep(0.3)
    p.refresh()
    assert p.state == "STOPPING" and visible(p.dashboard.force_button)
    t0 = time.monotonic()
    p.dashboard.force_button.click()
    assert p.dashboard.force_button.disabled
    assert p.wait_actions(60)
    assert time.monotonic() - t0 < 30  # did not wait out the 60 s grace period
    p.refresh()
    assert p.state == "ABORTED", p.outcome.banner.value
    other.refresh()
    assert other.state == "ABORTED"


# -- ended states --------------------------------------------------------------------------
def test_failed_run_shows_reason_exit_code_stderr_and_curves(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "8")
    p = make_panel()
    run_dir = start(p, max_steps=50)
    until(p, lambda: p.state == "FAILED")
    assert p.view == "failed"
    o = p.outcome
    assert "Failed" in o.banner.value and "exit code 1" in o.banner.value
    assert visible(o.stderr_tail) and "simulated crash at step 8" in o.stderr_tail.value
    assert list(p.dashboard.loss_line.x) == list(range(1, 8))
    assert visible(o.new_run_button) and not visible(o.clean_button) and not visible(o.playground_button)
    # New run: the form, pre-filled with this run's config.
    o.new_run_button.click()
    assert p.view == "form" and p.body.children == (p.form,)
    assert p.form.fields["max_steps"].value == 50 and visible(p.form.back_button)
    assert "Pre-filled" in p.form.message.value
    p.refresh()
    assert p.view == "form"  # the choice sticks across polls
    p.form.back_button.click()
    assert p.view == "failed" and p.run_dir == run_dir


def test_finished_run_shows_its_summary_logs_and_playground_but_no_resume(make_panel, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    start(p, max_steps=30, checkpoint_every=10)
    until(p, lambda: p.state == "FINISHED")
    o, d = p.outcome, p.dashboard
    assert p.view == "finished" and "Finished" in o.banner.value and "at step 30 / 30" in o.banner.value
    assert "Final loss" in o.banner.value and "checkpoints/step_30" in o.banner.value
    assert visible(o.playground_button) and visible(o.new_run_button)
    assert not visible(o.resume_button) and not visible(o.clean_button) and not visible(o.stderr_tail)
    assert not visible(d.controls)  # no Abort for an ended run
    d.log_stream.value = "stdout"  # the log panel's stream switch; the observer refreshes
    until(p, lambda: "simulated trainer: attempt 1, fresh start" in d.logs.value, what="stdout shown")
    d.log_stream.value = "supervisor"
    until(p, lambda: "simulated trainer" not in d.logs.value and d.logs.value, what="supervisor log shown")


def test_a_run_killed_by_a_signal_shows_the_signal_and_the_likely_cause(make_panel, workspace, sim_env):
    p = make_panel()
    start(p, max_steps=100_000)
    until(p, lambda: p.state == "RUNNING")
    trainer = RunManager(workspace).status().trainer_pid
    os.kill(trainer, signal.SIGKILL)  # as the OOM killer would
    until(p, lambda: p.state == "FAILED", what="FAILED")
    banner = p.outcome.banner.value
    assert "signal SIGKILL" in banner and "out of memory" in banner, banner
    assert visible(p.outcome.resume_button) == bool(RunManager(workspace).status().checkpoints)


def test_orphaned_run_warns_and_offers_clean_up_and_resume(make_panel, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.03")
    p = make_panel()
    run_dir = start(p, max_steps=3000, checkpoint_every=10)
    until(p, lambda: p.dashboard.progress.value >= 15, what="15 steps")
    with open(os.path.join(workspace, ".training.lock")) as f:
        pgid = json.load(f)["pgid"]
    os.killpg(pgid, signal.SIGKILL)  # as if the container was restarted under the run
    until(p, lambda: p.state == "ORPHANED", what="ORPHANED")
    o = p.outcome
    assert p.view == "orphaned" and "Orphaned" in o.banner.value and "gone" in o.banner.value
    assert visible(o.clean_button) and visible(o.resume_button) and visible(o.new_run_button)
    assert not visible(p.dashboard.controls)
    assert len(p.dashboard.loss_line.x) >= 15  # its curves are still shown
    o.clean_button.click()
    assert p.wait_actions(30)
    assert not os.path.exists(os.path.join(workspace, ".training.lock"))
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))  # files kept
    assert any("cleared the lock" in m for m in p.messages)
    p.refresh()
    assert p.state == "ORPHANED" and visible(p.outcome.resume_button)
    p.outcome.resume_button.click()
    assert p.wait_actions(30)
    until(p, lambda: p.state == "RUNNING", what="resumed")
    assert p.run_dir == run_dir
    RunManager(workspace).stop(force=True)


# -- history and playground ----------------------------------------------------------------
def test_history_lists_runs_selects_one_and_overlays_two(make_panel, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    first = start(p, max_steps=30)
    until(p, lambda: p.state == "FINISHED")
    time.sleep(1.1)  # run folders are named by the second
    p.outcome.new_run_button.click()
    second = start(p, max_steps=45)
    until(p, lambda: p.state == "FINISHED")
    rows = p.history.model.rows
    assert [r.run_dir for r in rows] == [second, first]  # newest first
    assert (rows[1].state, rows[1].step, rows[1].max_steps) == ("FINISHED", 30, 30)
    assert "FINISHED" in p.history.row_widgets[1].cells.value and "30/30" in p.history.row_widgets[1].cells.value
    p.history.row_widgets[1].check.value = True  # tick the first run
    assert p.run_dir == first and p.view == "finished"
    assert len(p.dashboard.loss_line.x) == 30
    p.history.row_widgets[0].check.value = True  # and the second: compared
    assert p.history.selected == (first, second)
    assert p.history.overlay_figure.layout.display is None and p.history.overlay_figure in p.history.children
    train = [m for m in p.history.overlay_figure.marks if not m.labels[0].endswith(" eval")]
    assert sorted(len(m.x) for m in train) == [30, 45]
    assert sorted(m.labels[0] for m in train) == sorted(os.path.basename(d) for d in (first, second))
    assert "max_steps" in p.history.diff_html.value  # the config keys that differ
    p.history.show_current_button.click()
    assert p.history.selected == () and p.history.overlay_figure.layout.display == "none"
    assert p.history.overlay_figure not in p.history.children  # not rendered at size 0
    assert p.run_dir == second


def test_playground_samples_in_a_worker_and_shows_progress(make_panel, sim_env, monkeypatch):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    run_dir = start(p, max_steps=20, checkpoint_every=10)
    until(p, lambda: p.state == "FINISHED")
    pg = p.playground
    assert pg.run_dir == run_dir and os.path.basename(run_dir) in pg.run_label.value
    assert pg.checkpoint.options[0] == ("step 20 (newest)", 20) and pg.checkpoint.value == 20
    assert pg.generate_button.disabled  # no prompt yet
    pg.prompt.value = "What is the capital of France?"
    assert not pg.generate_button.disabled
    release = threading.Event()
    calls = []

    def fake_generate(run, messages, checkpoint=None, model="tuned", on_progress=None, **settings):
        calls.append((run, messages[-1]["content"], settings["max_new_tokens"], checkpoint,
                      threading.current_thread() is threading.main_thread()))
        on_progress("loading the model and step_20")  # what the sampling subprocess reports
        release.wait(10)
        return {"text": "Paris.", "checkpoint": os.path.join(run, "checkpoints", "step_20"), "seconds": 0.5,
                "seed": settings["seed"]}

    monkeypatch.setattr(p.samplers, "generate", fake_generate)  # the real one: tests/test_warm_sampler.py
    p.outcome.playground_button.click()
    assert p.sections.selected_index == 1
    pg.generate_button.click()
    wait_for(lambda: "loading the model and step_20" in pg.progress.value, 10, what="progress")
    assert pg.busy and pg.generate_button.disabled
    release.set()
    assert p.wait_actions(30)
    assert pg.output.value == "Paris." and not pg.busy and "checkpoints/step_20 · 0.5" in pg.progress.value
    assert run_dir not in pg.progress.value  # the checkpoint is named inside its run
    assert calls == [(run_dir, "What is the capital of France?", 64, 20, False)]
    pg.checkpoint.value = 10  # an older checkpoint, picked by the user
    pg.generate_button.click()
    assert p.wait_actions(30)
    assert calls[-1][3] == 10


def test_playground_checkpoint_picker_follows_the_newest_unless_another_is_picked(make_panel, sim_env):
    p = make_panel()
    run_dir = start(p, max_steps=100_000, checkpoint_every=5)
    pg = p.playground
    until(p, lambda: len(pg.checkpoint.options) >= 2)
    assert [v for _, v in pg.checkpoint.options] == sorted([v for _, v in pg.checkpoint.options], reverse=True)
    assert "(newest)" in pg.checkpoint.options[0][0] and pg.checkpoint.value == pg.checkpoint.options[0][1]
    newest = pg.checkpoint.value
    until(p, lambda: pg.checkpoint.options[0][1] > newest)
    assert pg.checkpoint.value == pg.checkpoint.options[0][1], "a pick of the newest follows new checkpoints"
    pg.checkpoint.value = older = pg.checkpoint.options[-1][1]
    latest = pg.checkpoint.options[0][1]
    until(p, lambda: pg.checkpoint.options[0][1] > latest)
    assert pg.checkpoint.value == older or older not in [v for _, v in pg.checkpoint.options]
    assert pg.run_dir == run_dir and not pg.checkpoint.disabled
    p.manager.stop(force=True)


def test_export_row_offers_a_folder_and_shows_the_exporters_error(make_panel, workspace, sim_env):
    """Ended runs with a checkpoint get an Export row; its button runs the real exporter in a
    subprocess, which refuses a folder that is not empty (nothing there is touched)."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    run_dir = start(p, max_steps=10, checkpoint_every=5)
    until(p, lambda: p.state == "FINISHED")
    row = p.outcome.export_row
    assert visible(row) and row.format.value == "hf"
    assert row.folder.value == os.path.join(workspace, "exports", os.path.basename(run_dir) + "-hf")
    row.format.value = "gguf"
    assert row.folder.value.endswith("-gguf")  # our suggestion follows the format
    taken = os.path.join(workspace, "taken")
    os.makedirs(taken)
    open(os.path.join(taken, "mine.txt"), "w").close()
    row.folder.value = taken
    row.export_button.click()
    assert p.wait_actions(120)
    assert "Export failed" in row.progress.value and "exists and is not empty" in row.progress.value
    assert os.listdir(taken) == ["mine.txt"] and not row.export_button.disabled


def test_playground_shows_a_sampling_failure(make_panel, sim_env, monkeypatch):
    from gemma_ft_widgets.runs import RunError

    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    start(p, max_steps=10)
    until(p, lambda: p.state == "FINISHED")

    def broken(*a, **k):
        raise RunError("sampling failed (exit 1):\nno jax here")

    monkeypatch.setattr(p.samplers, "generate", broken)
    p.playground.prompt.value = "hi"
    p.playground.generate_button.click()
    assert p.wait_actions(30)
    assert "Sampling failed" in p.playground.progress.value and "no jax here" in p.playground.progress.value


# -- robustness ----------------------------------------------------------------------------
def test_poller_survives_errors_and_reports_them(make_panel, monkeypatch):
    p = make_panel(poll=True, poll_interval=0.05)
    real = p.manager.status
    failures = {"n": 0}

    def flaky(*a, **k):
        if failures["n"] < 3:
            failures["n"] += 1
            raise OSError("disk hiccup")
        return real(*a, **k)

    monkeypatch.setattr(p.manager, "status", flaky)
    wait_for(lambda: p.poll_errors >= 3 and p.polls >= 2, 10, what="errors then a good poll")
    assert p.polling and any("disk hiccup" in m for m in p.messages)
    assert p.message_log.layout.display is None


def test_close_stops_the_thread_promptly(make_panel):
    p = make_panel(poll=True, poll_interval=30)
    thread = p._poller._thread
    assert thread.is_alive()
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 2 and not thread.is_alive() and p.closed
    p.refresh()  # a no-op once closed
    p.close()  # idempotent


def test_first_poll_runs_in_the_thread_and_hidden_panels_pause(make_panel):
    p = make_panel(poll=True, poll_interval=0.02)
    assert p.wait_ready(10) and p.view == "form" and not p.paused
    p._view_count = 1  # the front end rendered it
    p._view_count = 0  # its cell was re-run or cleared: no view left
    assert p.paused
    time.sleep(0.1)
    n = p.polls
    time.sleep(0.3)
    assert p.polls == n and p.polling
    p._view_count = 1  # shown again (e.g. the notebook was reopened)
    wait_for(lambda: p.polls > n, 5, what="polling again")


def test_resume_from_a_checkpoint_picked_in_the_panel(make_panel, sim_env, workspace):
    """Issue 11, defect 3: the panel's picker next to Resume (`resume --checkpoint step_N`)."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.01")
    p = make_panel()
    run_dir = start(p, max_steps=100_000, checkpoint_every=5)
    until(p, lambda: len(contract.checkpoint_steps(run_dir)) >= 3, what="3 checkpoints")
    RunManager(workspace).stop()
    until(p, lambda: p.state == "ABORTED")
    o = p.outcome
    steps = contract.checkpoint_steps(run_dir)
    assert visible(o.resume_button) and visible(o.checkpoint_picker)
    assert [v for _, v in o.checkpoint_picker.options] == [""] + [str(s) for s in reversed(steps)]
    o.checkpoint_picker.value = str(steps[0])
    o.resume_button.click()
    assert p.wait_actions(30)
    until(p, lambda: p.state == "RUNNING", what="resumed")
    starts = [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)) if e["event"] == "start"]
    assert starts[-1]["attempt"] == 2 and starts[-1]["resume_step"] == steps[0]
    RunManager(workspace).stop(force=True)
