"""Driving JupyterLab like a person: open a notebook, run cells, read what is shown."""

from __future__ import annotations

import os
import time

ERROR_TEXT = "Error displaying widget"


def open_notebook(page, server, name: str, timeout: float = 120) -> None:
    page.goto(server.lab_url(name), timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    accept_kernel_dialog(page)
    wait_kernel_idle(page, timeout)


def accept_kernel_dialog(page, wait: float = 3) -> None:
    """A notebook without kernel metadata asks which kernel: take the default."""
    try:
        page.locator(".jp-Dialog .jp-mod-accept").first.click(timeout=wait * 1000)
    except Exception:
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


def restart_kernel(page) -> None:
    page.locator("li.lm-MenuBar-item", has_text="Kernel").first.click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text="Restart Kernel…").first.click()
    page.locator(".jp-Dialog-button.jp-mod-accept, .jp-Dialog button.jp-mod-warn").first.click()
    time.sleep(1.0)
    wait_kernel_idle(page)


def assert_no_widget_errors(page) -> None:
    body = page.inner_text("body")
    assert ERROR_TEXT not in body, "a widget failed to render"


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
