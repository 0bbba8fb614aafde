"""The quickstart in JupyterLab with the real trainer: the panel renders, Start trains, and the
loss line grows while the run trains; a first run with the form's defaults, untouched, ends
with a loss curve that falls. That run also takes the README's screenshot: with
GEMMA_FT_UPDATE_DOCS=1 the dashboard's picture is copied to docs/panel.png."""

import os
import shutil

import pytest

from gemma_ft_widgets.runs import RunManager

from . import drive

pytestmark = pytest.mark.browser
DOCS_PNG = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "panel.png")


@pytest.fixture(scope="module")
def shared(shared_lab_factory):
    # The real trainer (no GEMMA_FT_TRAINER); each test's workspace is its folder's gemma_ft_runs.
    return shared_lab_factory(env={"GEMMA_FT_WORKSPACE": None, "GEMMA_FT_TRAINER": None})


@pytest.fixture
def lab(shared):
    yield shared
    shared.end_test()


def test_panel_renders_start_trains_and_loss_line_moves(lab, page, workspaces, artifacts):
    rel, folder = lab.folder("start_trains")
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}")
    drive.show_panel(page)

    # The form, with its bqplot token histogram drawn, and no widget that failed to render.
    page.wait_for_selector(".gft-panel .gft-form", state="visible")
    for name in ("model", "dataset", "max_steps", "learning_rate"):
        assert page.locator(f".gft-panel .gft-field-{name}").is_visible(), name
    page.wait_for_selector(".gft-token-histogram svg.svg-figure", state="visible", timeout=60_000)
    drive.wait_for(lambda: page.locator(".gft-token-histogram .bargroup rect").count() > 3, 60,
                   what="histogram bars")
    assert page.locator(".gft-panel .gft-start").is_enabled()
    drive.assert_no_widget_errors(page)
    drive.screenshot(page, artifacts, "lab_training-1-form.png", page.locator(".gft-panel"))

    # Start with many steps, so the run is still going while we watch it.
    drive.start_run(page, 20000)
    drive.wait_badge(page, ("STARTING", "RUNNING"), 60)
    drive.wait_badge(page, "RUNNING", 300)  # jax import and compile: ~15-25 s on 2 cores
    status = RunManager(ws).status()
    assert status.state.value == "RUNNING" and status.max_steps == 20000
    assert status.run_name in drive.text_of(page, ".gft-dashboard .gft-run-name")
    assert "/ 20,000" in drive.text_of(page, ".gft-dashboard .gft-progress-label")  # fmt.count

    # The loss line's path grows while it trains (two reads, seconds apart).
    with drive.explain_curves(page):
        first = drive.wait_loss_points(page, 2, 60)
        later = drive.wait_loss_growth(page, first, 60)
        assert later.startswith("M") and drive.path_points(later) > drive.path_points(first)
        drive.assert_no_widget_errors(page)

        # Mid-training: the whole panel, once a hundred-odd steps and an eval are drawn.
        drive.wait_for(lambda: (drive.dashboard_step(page) or 0) >= 150, 120, what="step 150 on the dashboard")
        drive.wait_loss_points(page, 150, 30)
        assert RunManager(ws).status().state.value == "RUNNING"
    drive.screenshot(page, artifacts, "lab_training-2-panel.png", page.locator(".gft-panel"))
    # Axis labels as drawn: round integer steps, and no label repeated on any axis.
    for figure in (".gft-loss-figure", ".gft-throughput-figure"):
        x_labels, y_labels = (drive.tick_labels(page, figure, i) for i in (0, 1))
        assert x_labels and all(s.replace(",", "").isdigit() and int(s.replace(",", "")) % 10 == 0
                                for s in x_labels), (figure, x_labels)
        assert y_labels and len(set(y_labels)) == len(y_labels), (figure, y_labels)
    drive.screenshot_span(page, artifacts, "lab_training-3-dashboard.png", ".gft-dashboard",
                          ".gft-dashboard .gft-loss-figure")


def test_first_run_with_the_forms_defaults_draws_a_falling_curve(lab, page, workspaces, artifacts):
    """What a new user sees: Start pressed on the untouched form (LoRA on the pretrained `tiny`,
    the sample dataset, the default steps). The run finishes and its loss line falls: the last
    points are drawn far below the first ones."""
    rel, folder = lab.folder("first_run")
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}")
    drive.show_panel(page)
    page.wait_for_selector(".gft-panel .gft-form", state="visible")
    page.locator(".gft-panel .gft-start").click(timeout=60_000)
    page.wait_for_selector(".gft-dashboard .gft-loss-figure svg", state="visible", timeout=60_000)
    drive.wait_badge(page, "FINISHED", 900)
    status = RunManager(ws).status()
    assert (status.state.value, status.model) == ("FINISHED", "tiny") and status.step == status.max_steps
    events, _ = RunManager(ws).metrics(status.run_dir)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert losses[-1] < losses[0] / 3, (losses[0], losses[-1])
    with drive.explain_curves(page):
        d = drive.wait_loss_points(page, status.max_steps // 2, 60)
        ys = drive.path_ys(d)
        tenth = max(1, len(ys) // 10)
        start, end = sum(ys[:tenth]) / tenth, sum(ys[-tenth:]) / tenth
        # Falling: the last tenth sits in the lower part of the drawn range, the first in the upper.
        assert end - start > 0.5 * (max(ys) - min(ys)), (start, end, min(ys), max(ys))
        drive.assert_no_widget_errors(page)
    shot = drive.screenshot_span(page, artifacts, "lab_training-first-run.png", ".gft-dashboard",
                                 ".gft-dashboard .gft-loss-figure")
    if os.environ.get("GEMMA_FT_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS_PNG)


def test_playground_samples_a_finished_run(lab, page, workspaces, artifacts):
    """A short real run to FINISHED, then Playground: the checkpoint picker, the sampler's phases
    while it loads, and the answer's checkpoint and time, all drawn in the browser."""
    rel, folder = lab.folder("playground")
    ws = workspaces(os.path.join(folder, "gemma_ft_runs"))
    drive.open_notebook(page, lab.server, f"{rel}/{drive.QUICKSTART}")
    drive.show_panel(page)
    drive.start_run(page, 40)
    drive.wait_badge(page, "FINISHED", 300)
    assert RunManager(ws).status().checkpoints == [40]
    page.locator(".gft-panel .gft-open-playground").click()
    picker = page.locator(".gft-playground .gft-checkpoint select")
    picker.wait_for(state="visible", timeout=30_000)
    assert "step 40 (newest)" in picker.inner_text().replace("\xa0", " ")
    page.locator(".gft-playground .gft-prompt textarea").fill("What is the secret word?")
    page.locator(".gft-playground .gft-generate").click()
    progress = ".gft-playground .gft-sample-progress"
    drive.wait_for(lambda: "loading the model and step_40" in drive.text_of(page, progress), 60,
                   0.2, "the sampler's loading phase")
    drive.wait_for(lambda: "step_40 ·" in drive.text_of(page, progress), 300, 0.5, "the sample")
    drive.assert_no_widget_errors(page)
    drive.screenshot(page, artifacts, "lab_training-4-playground.png", page.locator(".gft-playground"))
