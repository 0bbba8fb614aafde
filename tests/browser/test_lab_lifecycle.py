"""Abort with confirmation, and a kernel restart that re-attaches to the running run, in
JupyterLab. The simulated trainer (no jax) keeps these quick; the real one is exercised by
test_lab_training and test_lab_server_kill."""

import os
import time

import pytest

from gemma_ft_widgets.runs import RunManager

from . import drive
from .conftest import SIM_TRAINER

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shared(shared_lab_factory):
    return shared_lab_factory(env={"GEMMA_FT_WORKSPACE": None, "GEMMA_FT_TRAINER": SIM_TRAINER,
                                   "GEMMA_FT_SIM_STEP_TIME": "0.2"})


@pytest.fixture
def lab(shared):
    yield shared
    shared.end_test()


def _open_and_start(lab, page, workspaces, name, max_steps=5000):
    rel, folder = lab.folder(name)
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}")
    drive.show_panel(page)
    drive.start_run(page, max_steps)
    drive.wait_badge(page, "RUNNING", 60)
    return ws


def _visible(page, selector):
    return page.locator(selector).first.is_visible()


def test_abort_needs_confirmation_and_ends_aborted(lab, page, workspaces, artifacts):
    ws = _open_and_start(lab, page, workspaces, "abort")
    manager = RunManager(ws)

    # Abort asks first; Cancel keeps the run going.
    page.locator(".gft-dashboard .gft-abort").click()
    page.wait_for_selector(".gft-dashboard .gft-confirm", state="visible")
    assert not _visible(page, ".gft-dashboard .gft-abort")
    drive.screenshot(page, artifacts, "lab_lifecycle-abort-1-confirm.png", page.locator(".gft-dashboard"))
    page.locator(".gft-dashboard .gft-cancel").click()
    page.wait_for_selector(".gft-dashboard .gft-abort", state="visible")
    assert not _visible(page, ".gft-dashboard .gft-confirm")
    assert manager.status().state.value == "RUNNING" and drive.badge(page) == "RUNNING"

    # Abort, then confirm: the trainer checkpoints and the run ends ABORTED.
    page.locator(".gft-dashboard .gft-abort").click()
    page.locator(".gft-dashboard .gft-confirm").click()
    drive.wait_badge(page, "ABORTED", 60)
    status = manager.status()
    assert status.state.value == "ABORTED", status
    page.wait_for_selector(".gft-outcome-view .gft-outcome", state="visible")
    assert "Stopped" in drive.text_of(page, ".gft-outcome-view .gft-outcome")
    assert not _visible(page, ".gft-dashboard .gft-abort")
    # The ended run's curve still shows every step it logged.
    steps = sum(1 for e in manager.metrics()[0] if e["event"] == "step")
    with drive.explain_curves(page):
        drive.wait_loss_points(page, min(steps, 1000), 15, f"the loss line to show all {steps} steps")
    drive.assert_no_widget_errors(page)
    drive.screenshot(page, artifacts, "lab_lifecycle-abort-2-aborted.png", page.locator(".gft-panel"))


def test_kernel_restart_reattaches_with_history(lab, page, workspaces, artifacts):
    ws = _open_and_start(lab, page, workspaces, "restart")
    manager = RunManager(ws)
    drive.wait_for(lambda: (manager.status().step or 0) >= 30, 60, what="30 steps")
    name = manager.status().run_name

    drive.restart_kernel(page)
    steps_before = sum(1 for e in manager.metrics()[0] if e["event"] == "step")
    assert manager.status().state.value == "RUNNING", "the restart reached the run"

    # A fresh kernel (execution count 1) re-runs setup and panel: the same run, with its history.
    setup, panel = drive.quickstart_cells()
    assert drive.run_cell_and_wait(page, setup) == 1
    drive.run_cell_and_wait(page, panel)
    drive.assert_reattached(page, name, steps_before, "from before the restart")
    assert not _visible(page, ".gft-form")
    drive.assert_no_widget_errors(page)
    drive.screenshot(page, artifacts, "lab_lifecycle-restart-reattached.png", page.locator(".gft-panel"))


def test_a_network_drop_between_browser_and_server_leaves_training_alone(lab, page, workspaces, artifacts):
    """Scenario 10: every connection between the page and the server is cut for ~10 s (and new
    ones refused). Training goes on meanwhile; after the link is back, JupyterLab reconnects
    the kernel and the panel's dashboard catches up with the run, in the same page."""
    from .netcut import CuttableLink

    rel, folder = lab.folder("network_drop")
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    link = CuttableLink(lab.server.port).start()
    try:
        drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}", via=link)
        drive.show_panel(page)
        drive.start_run(page, 5000)
        drive.wait_badge(page, "RUNNING", 60)
        manager = RunManager(ws)
        before = manager.status()
        drive.wait_for(lambda: (drive.dashboard_step(page) or 0) >= 3, 60, what="a few steps on the page")
        link.cut()
        cut_at = manager.status().step
        time.sleep(10)
        during = manager.status()
        assert during.state.value == "RUNNING" and during.trainer_pid == before.trainer_pid
        assert during.step >= cut_at + 20, "training slowed down while the browser was cut off"
        shown_before = drive.dashboard_step(page) or 0
        link.restore()
        drive.wait_for(lambda: (drive.dashboard_step(page) or 0) > during.step, 120, 0.5,
                       "the dashboard to catch up after the link came back")
        assert (drive.dashboard_step(page) or 0) > shown_before and link.connections > 1
        after = manager.status()
        assert after.state.value == "RUNNING" and after.trainer_pid == before.trainer_pid
        # The simulated trainer's throughput is constant: one tick, in the axis's own format.
        assert drive.tick_labels(page, ".gft-throughput-figure", 1) == ["5.12k"]
        drive.assert_no_widget_errors(page)
        close = page.locator(".jp-Dialog button", has_text="Close")  # JupyterLab's "Server Connection Error"
        if close.count():
            close.first.click()
        drive.screenshot(page, artifacts, "lab_lifecycle-network-drop-caught-up.png", page.locator(".gft-panel"))
    finally:
        link.close()


def test_run_table_renders_sorts_compares_and_fits_800px(lab, page, workspaces, artifacts):
    """The Runs section on four runs written by hand: rows, a header click that sorts, two
    ticked runs overlaid with their config diff, no widget error; at 800 px wide every part
    stays inside the panel (the table hides columns, or with "All columns" scrolls in its own box). With GEMMA_FT_UPDATE_DOCS=1 the
    picture is copied to docs/panel-runs.png."""
    from ..test_ui_run_table import T0, make_run

    rel, folder = lab.folder("run_table")
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    os.makedirs(ws)
    make_run(ws, "tiny-baseline", lr=1e-3, evals=(0.9, 0.5, 0.6), tags=["baseline"], start=T0, drop=0.6)
    make_run(ws, "tiny-lr3e-3", lr=3e-3, evals=(0.8, 0.45), tags=["sweep"], start=T0 + 600, attempts_s=(50, 70))
    make_run(ws, "tiny-lr1e-2", lr=1e-2, evals=(), state="FAILED", start=T0 + 1200, drop=1.2)
    make_run(ws, "tiny-lr3e-4", lr=3e-4, evals=(1.2,), state="ABORTED", start=T0 + 1800)
    drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}")
    drive.show_panel(page)
    page.locator(".gft-sections").get_by_text("Runs", exact=True).first.click()
    rows = page.locator(".gft-run-row")
    drive.wait_for(lambda: rows.locator("visible=true").count() == 4, 30, what="four rows")
    assert "tiny-lr3e-4" in rows.first.inner_text()  # newest first
    page.locator(".gft-sort-name").click()
    drive.wait_for(lambda: "tiny-baseline" in rows.first.inner_text(), 30, what="sorted by name")
    rows.nth(0).locator("input[type=checkbox]").check()
    page.wait_for_selector(".gft-run-actions .gft-delete-run", state="visible")
    rows.nth(1).locator("input[type=checkbox]").check()
    page.wait_for_selector(".gft-overlay-figure svg", state="visible", timeout=30_000)
    drive.wait_for(lambda: "learning_rate" in drive.text_of(page, ".gft-config-diff"), 30, what="the config diff")
    drive.assert_no_widget_errors(page)
    shot = drive.screenshot_span(page, artifacts, "lab_run_table.png", ".gft-sections", ".gft-config-diff")
    if os.environ.get("GEMMA_FT_UPDATE_DOCS") == "1":
        import shutil

        shutil.copyfile(shot, os.path.join(os.path.dirname(__file__), "..", "..", "docs", "panel-runs.png"))

    page.set_viewport_size({"width": 800, "height": 1800})
    rows.nth(1).locator("input[type=checkbox]").uncheck()  # one run ticked: its actions show
    page.wait_for_selector(".gft-run-actions .gft-delete-run", state="visible")
    time.sleep(0.5)  # let the layout settle
    panel = page.locator(".gft-panel").bounding_box()
    assert panel["x"] + panel["width"] <= 800, panel
    for sel in (".gft-run-filter", ".gft-show-current", ".gft-run-table", ".gft-run-note", ".gft-csv",
                ".gft-delete-run"):
        box = page.locator(sel).first.bounding_box()
        assert box and box["x"] >= panel["x"] - 1 and box["x"] + box["width"] <= panel["x"] + panel["width"] + 1, (
            sel, box, panel)
    # The table fits: it drops its less needed columns (note, tags, ...) rather than scrolling,
    # and every header still stands over its column.
    table = page.locator(".gft-run-table").first
    drive.wait_for(lambda: table.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), 10, what="no inner scroll")
    from gemma_ft_widgets.ui.run_table_model import COLUMNS

    shown = [k for k, *_ in COLUMNS if page.locator(f".gft-sort-{k}").first.is_visible()]
    assert {"name", "state", "final_eval"} <= set(shown) and "note" not in shown, shown
    for key in shown:
        head = page.locator(f".gft-sort-{key}").first.bounding_box()
        cell = rows.first.locator(f".gft-col-{key}").first.bounding_box()
        assert head and cell and abs(head["x"] - cell["x"]) <= 6, (key, head, cell)
    drive.screenshot(page, artifacts, "lab_run_table-800px.png", page.locator(".gft-history-view"))
    page.locator(".gft-all-columns").first.click()  # every column again, scrolling in its box
    drive.wait_for(lambda: page.locator(".gft-sort-note").first.is_visible(), 10, what="all columns")
    assert table.evaluate("e => e.scrollWidth > e.clientWidth")
    drive.assert_no_widget_errors(page)
