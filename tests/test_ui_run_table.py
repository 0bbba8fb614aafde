"""The run table (ui/run_table_model.py, ui/run_table.py) on run folders written by hand and
read by a real RunManager: rows, sorting, filtering, paging, selection -> overlay series and
config diff, notes kept in the run folder, the metrics CSV; then delete with a confirmation in
a panel, refused for a live run (the simulated trainer)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import time

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunError, RunManager
from gemma_ft_widgets.runs.metrics_csv import metrics_csv
from gemma_ft_widgets.runs.run_facts import attempts
from gemma_ft_widgets.ui.download import csv_link
from gemma_ft_widgets.ui.run_table import DROP_ORDER, RunTable, fit_levels, fit_style, row_html
from gemma_ft_widgets.ui.run_table_model import COLUMNS, RunTableModel, config_diff, overlay_series
from gemma_ft_widgets.ui.series import RunSeries

from .conftest import wait_for
from .test_ui_panel import configure, until

T0 = 1_790_000_000.0  # 2026-09-21


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000Z"


def make_run(ws, name: str, *, lr=1e-3, steps=20, evals=(0.9, 0.7, 0.8), state="FINISHED", tags=None,
             attempts_s=(100.0,), start=T0, model="tiny", drop=1.0) -> str:
    """A run folder as a trainer leaves it: config, status.log (one span per attempt),
    metrics.jsonl (steps, evals), result.json."""
    run_dir = os.path.join(ws, name)
    os.makedirs(run_dir)
    cfg = {"model": model, "method": "lora", "lora_rank": 8, "learning_rate": lr, "batch_size": 4,
           "max_steps": steps, "dataset": "d.jsonl"}
    if tags is not None:
        cfg["tags"] = tags
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg)
    lines, t = [], start
    for k, span in enumerate(attempts_s):
        lines.append(f"{iso(t)} STARTING launching the supervisor")
        lines.append(f"{iso(t + 1)} STARTING attempt {k + 1}: trainer pid 1 started")
        lines.append(f"{iso(t + 2)} RUNNING first step")
        lines.append(f"{iso(t + span)} {state if k == len(attempts_s) - 1 else 'ABORTED'} ended")
        t += span + 1000  # a pause between attempts does not count
    with open(os.path.join(run_dir, contract.STATUS_LOG_NAME), "w") as f:
        f.write("\n".join(lines) + "\n")
    events = [{"event": "start", "time": start, "attempt": 1, "max_steps": steps}]
    every = max(1, steps // max(1, len(evals)))
    ev = iter(evals)
    for s in range(1, steps + 1):
        events.append({"event": "step", "time": start + s, "step": s, "loss": 2.0 - drop * s / steps, "lr": lr})
        if s % every == 0:
            v = next(ev, None)
            if v is not None:
                events.append({"event": "eval", "time": start + s, "step": s, "eval_loss": v})
    events.append({"event": "final", "time": start + steps + 1, "state": state, "step": steps})
    with open(os.path.join(run_dir, contract.METRICS_NAME), "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))
    contract.atomic_write_json(os.path.join(run_dir, contract.RESULT_NAME), {
        "state": state, "exit_code": 0 if state == "FINISHED" else 1, "signal": None, "signal_name": None,
        "reason": state.lower(), "final_step": steps, "last_checkpoint": None,
        "started_at": iso(start), "ended_at": iso(start + attempts_s[-1]), "attempt": len(attempts_s),
        "trainer_pid": 1})
    os.utime(os.path.join(run_dir, contract.STATUS_LOG_NAME), (start, start))
    return run_dir


@pytest.fixture
def four_runs(tmp_path):
    ws = str(tmp_path / "ws")
    os.makedirs(ws)
    dirs = {
        "a": make_run(ws, "a-run", lr=1e-3, evals=(0.9, 0.5, 0.6), tags=["baseline", "lora"], start=T0),
        "b": make_run(ws, "b-run", lr=3e-3, evals=(0.8, 0.7), tags="sweep, lora", start=T0 + 10_000,
                      attempts_s=(50.0, 70.0)),
        "c": make_run(ws, "c-run", lr=1e-2, evals=(), state="FAILED", start=T0 + 20_000),
        "d": make_run(ws, "d-run", lr=3e-4, evals=(1.2,), state="ABORTED", start=T0 + 30_000, model="gemma3-270m"),
    }
    return ws, dirs


def names(model) -> list[str]:
    return [r.name for r in model.rows]


def test_rows_sort_filter_and_page(four_runs):
    ws, d = four_runs
    m = RunTableModel(page_size=3)
    m.set_runs(RunManager(ws).runs())
    assert names(m) == ["d-run", "c-run", "b-run", "a-run"]  # newest start first
    a, b = m.row(d["a"]), m.row(d["b"])
    assert (a.state, a.model, a.method, a.lr, a.batch, a.step, a.max_steps) == ("FINISHED", "tiny", "lora r8",
                                                                                1e-3, 4, 20, 20)
    assert (a.final_eval, a.best_eval) == (0.6, 0.5)  # the last eval, the lowest one
    assert a.tags == ("baseline", "lora") and b.tags == ("sweep", "lora") and m.row(d["c"]).tags == ()
    assert (b.wall_s, b.attempts) == (120.0, 2)  # both attempts, not the pause between them
    assert a.started == T0

    m.sort_by("best_eval")  # a new column: ascending for a loss; runs without an eval last
    assert names(m) == ["a-run", "b-run", "d-run", "c-run"]
    m.sort_by("best_eval")  # again: reversed, still without-eval last
    assert names(m) == ["d-run", "b-run", "a-run", "c-run"]
    m.sort_by("lr")
    assert names(m) == ["c-run", "b-run", "a-run", "d-run"] and m.descending
    m.sort_by("name")
    assert names(m) == ["a-run", "b-run", "c-run", "d-run"]
    with pytest.raises(ValueError, match="unknown column"):
        m.sort_by("nope")

    assert [r.name for r in m.page_rows] == ["a-run", "b-run", "c-run"] and m.pages == 2
    m.page = 1
    assert [r.name for r in m.page_rows] == ["d-run"]
    m.text_filter = "SWEEP"  # any case; tags count
    assert names(m) == ["b-run"] and m.page == 0  # the page is clamped to what is left
    m.text_filter = "lora baseline"  # every word
    assert names(m) == ["a-run"]
    m.text_filter, m.state_filter = "", "FAILED"
    assert names(m) == ["c-run"]
    m.state_filter, m.text_filter = "all", "gemma3"
    assert names(m) == ["d-run"]


def test_table_view_sorts_selects_and_compares(four_runs):
    ws, d = four_runs
    selections = []
    view = RunTable(on_select=selections.append)
    try:
        view.set_runs(RunManager(ws).runs())
        shown = lambda: [re.search(r"<code>([^<]+)</code>", s.cells.value).group(1)  # noqa: E731
                         for s in view.row_widgets if s.box.layout.display != "none"]
        assert shown() == ["d-run", "c-run", "b-run", "a-run"]
        view.sort_buttons["name"].click()
        assert shown() == ["a-run", "b-run", "c-run", "d-run"] and view.sort_buttons["name"].description == "Run ▲"
        assert "2 min 00 s (2×)" in view.row_widgets[1].cells.value  # b-run's wall time, over 2 attempts
        view.filter_text.value = "sweep"
        assert shown() == ["b-run"] and "of 1 (filtered from 4)" in view.count_label.value
        view.filter_text.value = ""
        view.row_widgets[0].check.value = True
        assert selections[-1] == (d["a"],) and view.actions.layout.display is None
        view.row_widgets[1].check.value = True
        assert selections[-1] == (d["a"], d["b"]) and view.actions.layout.display == "none"
        diff = view.model.diff()
        assert dict(diff) == {"learning_rate": [1e-3, 3e-3], "tags": [["baseline", "lora"], "sweep, lora"]}
        assert "learning_rate" in view.diff_html.value and "max_steps" not in view.diff_html.value
        series = {k: RunSeries(k) for k in (d["a"], d["b"])}
        for s in series.values():
            s.read()
        out = overlay_series(view.selected, series.get)
        assert [(label, len(x), list(ey)) for label, x, _, _, ey in out] == [("a-run", 20, [0.9, 0.5, 0.6]),
                                                                              ("b-run", 20, [0.8, 0.7])]
        view.show_overlay(out)
        assert view.overlay_figure in view.children and len(view.overlay_figure.marks) == 4  # train + eval each
    finally:
        view.close()


def test_a_narrow_notebook_drops_columns_by_level_and_keeps_what_a_comparison_needs(four_runs):
    """At 800 px the table scrolled sideways (1,370 px). It now hides column groups as its box
    narrows (CSS container queries, drawn by the browser test); here, the levels themselves."""
    keys = [k for k, *_ in COLUMNS]
    assert all(k in keys for group in DROP_ORDER for k in group)
    levels = fit_levels()
    widths = [px for px, _ in levels]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)
    # JupyterLab's notebook at an 800 px window leaves a cell about 700 px wide.
    fits = next(hidden for px, hidden in levels if px <= 700)
    assert {"name", "state", "final_eval", "steps"}.isdisjoint(fits)
    css = fit_style()
    for above, _ in levels[:-1]:
        assert f"@container (max-width:{above - 1}px)" in css
    table = RunTable()
    table.set_runs(RunManager(four_runs[0]).runs())
    html = row_html(table.model.rows[0])
    assert all(f'class="gft-col-{k}"' in html for k in keys)  # a cell and its header hide together
    assert all(f"gft-col-{k}" in table.sort_buttons[k]._dom_classes for k in keys)
    assert "gft-run-fit" in table.table._dom_classes
    table.all_columns.value = True  # every column, scrolling sideways
    assert "gft-run-fit" not in table.table._dom_classes
    table.all_columns.value = False
    assert "gft-run-fit" in table.table._dom_classes


def test_config_diff_lists_only_keys_that_differ():
    assert config_diff({"x": {"a": 1, "b": 2}, "y": {"a": 1, "b": 3, "c": 0}}) == [("b", [2, 3]), ("c", [None, 0])]
    assert config_diff({"x": {"a": 1}, "y": {"a": 1}}) == []


def test_note_is_kept_in_the_run_folder(four_runs):
    ws, d = four_runs
    m = RunTableModel()
    m.set_runs(RunManager(ws).runs())
    assert m.set_note(d["a"], "  lr too low?\n") == "lr too low?"
    assert open(os.path.join(d["a"], contract.NOTE_NAME)).read() == "lr too low?\n"
    assert m.row(d["a"]).note == "lr too low?"
    m.text_filter = "too low"
    assert names(m) == ["a-run"]
    again = RunTableModel()  # a new panel, a new kernel: the note is read from the folder
    again.set_runs(RunManager(ws).runs())
    assert again.row(d["a"]).note == "lr too low?"
    m.set_note(d["a"], "")
    assert not os.path.exists(os.path.join(d["a"], contract.NOTE_NAME))
    with pytest.raises(RunError, match="at most"):
        m.set_note(d["a"], "x" * 20_000)
    with pytest.raises(RunError, match="no longer exists"):
        m.set_note(os.path.join(ws, "gone"), "hi")


def test_metrics_csv_and_its_download_link(four_runs, monkeypatch):
    ws, d = four_runs
    rows = list(csv.DictReader(io.StringIO(metrics_csv(d["a"]))))
    assert [r["event"] for r in rows].count("step") == 20 and [r["event"] for r in rows].count("eval") == 3
    assert rows[0]["step"] == "1" and float(rows[0]["loss"]) == 2.0 - 1 / 20 and rows[0]["eval_loss"] == ""
    evals = [r for r in rows if r["event"] == "eval"]
    assert [float(r["eval_loss"]) for r in evals] == [0.9, 0.5, 0.6]
    html = csv_link(d["a"])
    url = re.search(r'href="data:text/csv;base64,([^"]+)"', html).group(1)
    written = open(os.path.join(d["a"], contract.METRICS_CSV_NAME)).read()
    assert base64.b64decode(url).decode() == written == metrics_csv(d["a"])
    assert 'download="a-run-metrics.csv"' in html
    assert metrics_csv(str(os.path.dirname(d["a"]))) == "event,step,time\n"  # no metrics: a header
    from gemma_ft_widgets.ui import download

    monkeypatch.setattr(download, "INLINE_BYTES", 100)  # a big CSV: saved in the run folder only
    html = csv_link(d["b"])
    assert "data:" not in html and "saved as" in html
    assert open(os.path.join(d["b"], contract.METRICS_CSV_NAME)).read() == metrics_csv(d["b"])


def test_attempts_count_an_open_attempt_up_to_now(tmp_path):
    run_dir = str(tmp_path)
    with open(os.path.join(run_dir, contract.STATUS_LOG_NAME), "w") as f:
        f.write(f"{iso(T0)} STARTING launching\n{iso(T0 + 5)} RUNNING first step\n")
    assert attempts(run_dir, now=T0 + 30) == (T0, 30.0, 1)
    assert attempts(str(tmp_path / "none")) == (None, None, 0)


def test_delete_asks_first_and_refuses_a_live_run(make_panel, workspace, sim_env):
    """Delete through the panel's table: the confirmation, RunManager.delete, the row gone; a
    live run is refused and its folder kept."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0")
    p = make_panel()
    configure(p, max_steps=5)
    p.form.start_button.click()
    assert p.wait_actions(30)
    until(p, lambda: p.state == "FINISHED")
    done = p.run_dir
    time.sleep(1.1)  # run folders are named by the second
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.2")
    p.outcome.new_run_button.click()
    configure(p, max_steps=10_000)
    p.form.start_button.click()
    assert p.wait_actions(30)
    until(p, lambda: p.state == "RUNNING")
    live = p.run_dir
    t = p.history
    assert [r.run_dir for r in t.model.rows] == [live, done]

    t.row_widgets[0].check.value = True  # the live run
    t.delete_button.click()
    assert t.confirm_box.layout.display is None and "every file" in t.confirm_label.value
    t.confirm_delete_button.click()
    assert p.wait_actions(30)
    assert "Not deleted" in t.message.value and "active" in t.message.value and os.path.isdir(live)

    t.row_widgets[0].check.value = False
    t.row_widgets[1].check.value = True  # the finished one: Cancel first, then Yes
    t.delete_button.click()
    t.cancel_delete_button.click()
    assert t.confirm_box.layout.display == "none" and t.model.confirming_delete == ""
    assert os.path.isdir(done)
    t.delete_button.click()
    t.confirm_delete_button.click()
    assert p.wait_actions(30)
    assert not os.path.exists(done) and "deleted" in t.message.value
    until(p, lambda: [r.run_dir for r in t.model.rows] == [live], what="the row gone")
    assert t.selected == ()
    RunManager(workspace).stop(force=True)
    wait_for(lambda: not RunManager(workspace).status().active, what="stopped")


def test_a_changed_status_moves_its_row_only_when_the_sort_says_so(four_runs):
    """A poll with a run in progress hands a new status for it: the row is rebuilt, and moves
    if its sort value changed (else it is put where it was)."""
    import dataclasses

    ws, d = four_runs
    statuses = RunManager(ws).runs()
    m = RunTableModel()
    m.set_runs(statuses)
    m.sort_by("steps")  # a count: descending first
    assert m.descending
    assert [r.step for r in m.rows] == [20, 20, 20, 20]
    i = next(k for k, st in enumerate(statuses) if st.run_dir == d["c"])
    polled = list(statuses)
    polled[i] = dataclasses.replace(statuses[i], step=25)
    m.set_runs(polled)
    assert m.rows[0].name == "c-run" and m.rows[0].step == 25  # moved up
    m.sort_by("name")
    before = [r.name for r in m.rows]
    polled = list(polled)
    polled[i] = dataclasses.replace(polled[i], step=26, eval_loss=0.3)
    m.set_runs(polled)
    assert [r.name for r in m.rows] == before and m.row(d["c"]).step == 26  # in place
    assert m.rows[before.index("c-run")].final_eval == 0.3


def test_a_long_metrics_file_has_its_best_eval_read_at_the_next_poll(four_runs, monkeypatch):
    """A first attach does not scan a long history for its best eval: the next poll does."""
    from gemma_ft_widgets.ui import run_table_model

    ws, d = four_runs
    monkeypatch.setattr(run_table_model, "LAZY_BYTES", 100)  # each metrics file here is longer
    statuses = RunManager(ws).runs()
    m = RunTableModel()
    m.set_runs(statuses)
    assert [r.best_eval for r in m.rows] == [None] * 4
    for _ in range(4):
        m.set_runs(statuses)  # the same list (nothing changed): one run's best eval per poll
    assert m.row(d["a"]).best_eval == 0.5 and m.row(d["b"]).best_eval == 0.7 and m.row(d["c"]).best_eval is None
