"""Driving JupyterLab like a person: open a notebook, run cells, read what is shown."""

from __future__ import annotations

import os
import re
import time

ERROR_TEXT = "Error displaying widget"


def open_notebook(page, server, name: str, timeout: float = 120, via=None) -> None:
    """Open `name` in JupyterLab (through `via`, a netcut.CuttableLink, when given)."""
    url = server.lab_url(name)
    page.goto(url.replace(server.url, via.url, 1) if via is not None else url, timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    accept_kernel_dialog(page)
    wait_kernel_idle(page, timeout)


def accept_kernel_dialog(page, wait: float = 3) -> None:
    """A notebook without kernel metadata asks which kernel: take the default."""
    try:
        page.locator(".jp-Dialog .jp-mod-accept").first.click(timeout=wait * 1000)
    except Exception:  # noqa: BLE001 (playwright's timeout or a detached node: no dialog came)
        pass


def wait_kernel_idle(page, timeout: float = 120) -> None:
    """The status bar reads 'Python 3 (ipykernel) | Idle' once the kernel is up and quiet."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = page.locator("#jp-main-statusbar").inner_text(timeout=5000)
        if "| Idle" in text:
            return
        time.sleep(0.5)
    raise TimeoutError("kernel never became idle")


def kernel_status(page) -> str:
    return page.locator("#jp-main-statusbar").inner_text(timeout=5000)


def run_cell(page, index: int) -> None:
    """Select code cell `index` (0-based among all cells) and press Shift+Enter."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def run_all(page) -> None:
    page.locator(".jp-Notebook").click()
    page.keyboard.press("Escape")
    page.locator("li.lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text="Run All Cells").first.click()


def cell_prompt(page, index: int) -> str:
    """The input prompt of cell `index`: '[ ]:', '[*]:' while it runs, '[3]:' once run."""
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").inner_text(
        timeout=5000).strip()


def run_cell_and_wait(page, index: int, timeout: float = 120) -> int:
    """Run code cell `index` and wait until its prompt shows an execution count; return it.

    Raises if the cell's output shows a Python traceback.
    """
    run_cell(page, index)
    prompt = wait_for(lambda: (lambda p: p if re.fullmatch(r"\[\d+\]:", p) else None)(
        cell_prompt(page, index)), timeout, 0.25, f"cell {index} to finish")
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    if cell.locator("[data-mime-type='application/vnd.jupyter.error']").count():
        raise AssertionError(f"cell {index} raised:\n{cell.inner_text()}")
    return int(prompt[1:-2])


def restart_kernel(page) -> None:
    """Kernel menu > Restart Kernel…, accept the dialog, wait for the new kernel to be idle."""
    page.locator("li.lm-MenuBar-item", has_text="Kernel").first.click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text="Restart Kernel…").first.click()
    page.locator(".jp-Dialog-button.jp-mod-accept, .jp-Dialog button.jp-mod-warn").first.click()
    try:  # the status bar leaves Idle while it restarts (often too briefly to see)
        wait_for(lambda: "| Idle" not in kernel_status(page), 5, 0.1, "restart to begin")
    except TimeoutError:
        pass
    wait_kernel_idle(page)


def assert_no_widget_errors(page) -> None:
    body = page.inner_text("body")
    assert ERROR_TEXT not in body, "a widget failed to render: " + body[body.find(ERROR_TEXT):][:300]
    # A bqplot figure drawn while hidden (size 0) logs negative <rect> sizes: none of ours is.
    bad = [m for m in getattr(page, "gft_console", []) if "negative value is not valid" in m]
    assert not bad, bad[:4]


def screenshot(page, artifacts: str, name: str, locator=None) -> str:
    path = os.path.join(artifacts, name)
    (locator or page).screenshot(path=path)
    return path


def wait_for(predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


# -- the control panel ---------------------------------------------------------------------
LOSS_PATH = ".gft-loss-figure g.curve path.line"


def set_field(page, name: str, value, scope: str = ".gft-panel") -> None:
    """Type into a form field [gft-field-<name>]; Enter sends it to the kernel."""
    box = page.locator(f"{scope} .gft-field-{name} input").first
    box.fill(str(value))
    box.press("Enter")


def text_of(page, selector: str) -> str:
    loc = page.locator(selector)
    return loc.first.inner_text(timeout=5000).strip() if loc.count() else ""


def badge(page) -> str:
    """The dashboard's state badge: STARTING, RUNNING, STOPPING, ABORTED, ..."""
    return text_of(page, ".gft-dashboard .gft-state-badge")


def wait_badge(page, states, timeout: float = 120) -> str:
    states = {states} if isinstance(states, str) else set(states)
    return wait_for(lambda: (lambda b: b if b in states else None)(badge(page)), timeout, 0.5,
                    f"badge in {sorted(states)}")


def loss_path(page) -> str:
    """The 'd' of the train-loss line (the first Lines mark of the loss figure), '' if none."""
    loc = page.locator(LOSS_PATH)
    if not loc.count():
        return ""
    return loc.first.get_attribute("d", timeout=5000) or ""


def path_points(d: str) -> int:
    """How many points an SVG polyline path like 'M1,2L3,4L5,6' draws."""
    return len(re.findall(r"[ML]\s*-?[\d.eE+-]+\s*,\s*-?[\d.eE+-]+", d or ""))


def path_ys(d: str) -> list[float]:
    """The y of each point of an SVG polyline path (SVG y grows downwards: a falling loss
    draws growing y values)."""
    return [float(y) for y in re.findall(r"[ML]\s*-?[\d.eE+-]+\s*,\s*(-?[\d.eE+-]+)", d or "")]


# -- the tutorial notebooks ----------------------------------------------------------------
NOTEBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "notebooks")
QUICKSTART = "01_quickstart.ipynb"


def code_cell_index(notebook: str, needle: str) -> int:
    """Index (among all cells, as the page counts them) of the first code cell containing `needle`."""
    import json

    with open(os.path.join(NOTEBOOKS, notebook)) as f:
        cells = json.load(f)["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and needle in "".join(cell["source"]):
            return i
    raise LookupError(f"no code cell of {notebook} contains {needle!r}")


def quickstart_cells() -> tuple[int, int]:
    """(setup cell, panel cell) of the quickstart: WORKSPACE = ..., then panel = ControlPanel(...)."""
    return (code_cell_index(QUICKSTART, "WORKSPACE = "),
            code_cell_index(QUICKSTART, "panel = ControlPanel("))


def show_panel(page, notebook: str = QUICKSTART, timeout: float = 120) -> None:
    """Run the quickstart's setup and panel cells; wait until the panel left its loading view."""
    setup, panel = quickstart_cells()
    run_cell_and_wait(page, setup, timeout)
    run_cell_and_wait(page, panel, timeout)
    page.wait_for_selector(".gft-panel", state="visible", timeout=timeout * 1000)
    page.wait_for_selector(".gft-panel .gft-form:visible, .gft-panel .gft-dashboard:visible, "
                           ".gft-panel .gft-outcome-view:visible", state="visible", timeout=timeout * 1000)


def start_run(page, max_steps: int, timeout: float = 60) -> None:
    """On the panel's form: set Steps, press Start, wait for the dashboard."""
    page.wait_for_selector(".gft-panel .gft-form", state="visible", timeout=timeout * 1000)
    set_field(page, "max_steps", max_steps)
    page.locator(".gft-panel .gft-start").click(timeout=timeout * 1000)
    page.wait_for_selector(".gft-dashboard .gft-loss-figure svg", state="visible", timeout=timeout * 1000)


def dashboard_step(page) -> int | None:
    """The step the dashboard's progress label shows ('step 1,234 / 5,000 (24%)')."""
    m = re.search(r"step\s+([\d,]+)", text_of(page, ".gft-dashboard .gft-progress-label"))
    return int(m.group(1).replace(",", "")) if m else None


def screenshot_span(page, artifacts: str, name: str, top: str, bottom: str, pad: int = 8) -> str:
    """A screenshot from the top of `top` to the bottom of `bottom` (selectors), `top`'s width."""
    first = page.locator(top).first
    # Bring `top` to the top of its scrolling ancestor, `pad` pixels below that ancestor's edge.
    first.evaluate("""(el, pad) => {
        el.scrollIntoView({block: 'start'});
        for (let p = el.parentElement; p; p = p.parentElement) {
            const o = getComputedStyle(p).overflowY;
            if ((o === 'auto' || o === 'scroll') && p.scrollHeight > p.clientHeight) {
                p.scrollBy(0, -pad);
                break;
            }
        }
    }""", pad)
    a, b = first.bounding_box(), page.locator(bottom).first.bounding_box()
    clip = {"x": max(0, a["x"] - pad), "y": a["y"], "width": a["width"] + 2 * pad,
            "height": b["y"] + b["height"] - a["y"] + pad}
    path = os.path.join(artifacts, name)
    page.screenshot(path=path, clip=clip)
    return path


def run_scratch(page, code: str, timeout: float = 30) -> str:
    """Add a code cell at the end of the notebook, run `code` in it, return what it printed."""
    page.locator(".jp-Notebook .jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # insert a cell below and select it
    index = page.locator(".jp-Notebook .jp-Cell").count() - 1
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    wait_for(lambda: re.fullmatch(r"\[\d+\]:", cell_prompt(page, index)), timeout, 0.25, "the scratch cell")
    return cell.locator(".jp-OutputArea").inner_text(timeout=5000)


CURVES_PROBE = """\
import numpy as _np
for _n, _l in (("loss", panel.dashboard.loss_line), ("eval", panel.dashboard.eval_line),
               ("throughput", panel.dashboard.throughput_line)):
    _x, _y = _np.asarray(_l.x, float), _np.asarray(_l.y, float)
    print(_n, "len", len(_x), len(_y), "nan", int(_np.isnan(_x).sum()), int(_np.isnan(_y).sum()),
          "x", _x[:2], _x[-2:], "y", _y[-2:])
print("panel", panel.view, panel.state, "polls", panel.polls, "errors", panel.poll_errors)
"""


class explain_curves:
    """On an exception inside, add what the kernel's panel holds for its curves (and what the
    page draws) to the error: a broken plot then says whether the data or the drawing is wrong."""

    def __init__(self, page):
        self.page = page

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or not isinstance(error, (AssertionError, TimeoutError)):
            return False
        try:
            drawn = {"loss_points": path_points(loss_path(self.page)),
                     "dashboard_step": dashboard_step(self.page),
                     "loss_x_ticks": self.page.locator(".gft-loss-figure g.axis").first.locator(
                         "g.tick").count()}
            kernel = run_scratch(self.page, CURVES_PROBE)
        except Exception as e:  # noqa: BLE001 - the original error matters more
            drawn, kernel = {}, f"(probe failed: {e!r})"
        raise AssertionError(f"{error}\npage: {drawn}\nkernel:\n{kernel}") from error


def wait_loss_points(page, n: int, timeout: float = 30, what: str | None = None) -> str:
    """Wait until the train-loss line draws at least `n` points; return its path."""
    return wait_for(lambda: (lambda d: d if path_points(d) >= n else None)(loss_path(page)), timeout,
                    0.5, what or f"a loss line of {n}+ points")


def wait_loss_growth(page, before: str, timeout: float = 60) -> str:
    """Wait until the train-loss line differs from `before` and has more points; return it."""
    grown = lambda d: d if d != before and path_points(d) > path_points(before) else None  # noqa: E731
    return wait_for(lambda: grown(loss_path(page)), timeout, 0.5, "the loss line to grow")


def assert_reattached(page, run_name: str, steps_before: int, since: str) -> None:
    """The panel on `page` shows `run_name` RUNNING with the loss curve of the (at least)
    `steps_before` steps logged `since` (e.g. "before the restart")."""
    page.wait_for_selector(".gft-dashboard .gft-loss-figure svg", state="visible", timeout=60_000)
    wait_badge(page, "RUNNING", 30)
    assert run_name in text_of(page, ".gft-dashboard .gft-run-name")
    with explain_curves(page):
        wait_loss_points(page, min(steps_before, 1000), 30,
                         f"the loss line to show the {steps_before} steps {since}")
        assert (dashboard_step(page) or 0) >= steps_before


def tick_labels(page, figure: str, axis: int) -> list[str]:
    """The tick labels a bqplot figure draws on its `axis` (0: x, 1: y), in order."""
    texts = page.locator(f"{figure} g.axis").nth(axis).locator("g.tick text").all_text_contents()
    return [t.strip() for t in texts if t and t.strip()]


def code_cell_index_in_page(page, needle: str, timeout: float = 30) -> int:
    """Index (among all cells on the page) of the first cell whose source contains `needle`."""
    def find():
        cells = page.locator(".jp-Notebook .jp-Cell")
        for i in range(cells.count()):
            if needle in cells.nth(i).locator(".jp-InputArea-editor").inner_text(timeout=5000):
                return i + 1  # +1: 0 is falsy for wait_for
        return None

    return wait_for(find, timeout, 0.5, f"a cell containing {needle!r}") - 1
