"""The quickstart's panel rendered by Voilà while a run trains: the dashboard, live."""

import os

import nbformat
import pytest

from gemma_ft_widgets import demo_config
from gemma_ft_widgets.runs import RunManager

from . import drive
from .conftest import SIM_TRAINER
from .lab import VoilaServer

pytestmark = pytest.mark.browser


def quickstart_dashboard_notebook(path) -> str:
    """The quickstart's setup and panel cells, nothing else (its later cells press Start and
    wait for the run to end, which Voilà would wait for before showing anything)."""
    nb = nbformat.read(os.path.join(drive.NOTEBOOKS, drive.QUICKSTART), as_version=4)
    setup, panel = drive.quickstart_cells()
    small = nbformat.v4.new_notebook(cells=[nb.cells[setup], nb.cells[panel]], metadata=nb.metadata)
    nbformat.write(small, str(path))
    return str(path)


def test_voila_renders_the_quickstart_dashboard_live(tmp_path, monkeypatch, page, workspaces, artifacts):
    ws = workspaces(tmp_path / "ws")
    monkeypatch.setenv("GEMMA_FT_SIM_STEP_TIME", "0.2")  # the supervisor inherits this process's env
    manager = RunManager(ws, trainer=SIM_TRAINER)
    run = manager.start(demo_config(max_steps=5000))
    manager.wait(until="RUNNING", timeout=60)

    (tmp_path / "app").mkdir()
    notebook = quickstart_dashboard_notebook(tmp_path / "app" / "quickstart_dashboard.ipynb")
    server = VoilaServer(notebook, str(tmp_path / "voila-home"), env={"GEMMA_FT_WORKSPACE": ws}).start()
    try:
        page.goto(server.url, timeout=120_000)
        page.wait_for_selector(".gft-dashboard .gft-loss-figure svg", state="visible", timeout=120_000)
        drive.wait_badge(page, "RUNNING", 30)
        assert run.name in drive.text_of(page, ".gft-dashboard .gft-run-name")
        first = drive.wait_loss_points(page, 2, 30)
        drive.wait_loss_growth(page, first, 30)  # live updates from the kernel's poller thread
        assert page.locator(".gft-dashboard .gft-abort").is_visible()
        assert "WORKSPACE" not in page.inner_text("body"), "Voilà shows no code"
        drive.assert_no_widget_errors(page)
        drive.screenshot(page, artifacts, "voila-dashboard.png", page.locator(".gft-panel"))
        kernels = server.processes()
        assert kernels, "Voilà runs a kernel for the page"
    finally:
        left = server.stop()
    assert not left, f"Voilà left processes behind: {left}"
    assert manager.status().state.value == "RUNNING", "closing Voilà leaves the run alone"
