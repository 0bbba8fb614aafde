import os
import shutil

import pytest

from .lab import LabServer, have_chromium, launch_browser

pytestmark = pytest.mark.browser
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts")


def pytest_collection_modifyitems(config, items):
    if have_chromium():
        return
    if os.environ.get("GEMMA_FT_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError("GEMMA_FT_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing "
                                "(apt-get install chromium)")
    skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install chromium)")
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def artifacts():
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.abspath(ARTIFACTS)


@pytest.fixture(scope="session")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    b = launch_browser(playwright_instance)
    yield b
    b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def lab_root(tmp_path):
    """A folder the server serves: the repo's notebooks, plus a fresh workspace."""
    root = tmp_path / "root"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "..", "notebooks"), root,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


@pytest.fixture
def make_lab(tmp_path, lab_root):
    servers = []

    def make(env=None):
        server = LabServer(str(lab_root), str(tmp_path / "jupyter-home"), env=env).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.delete_sessions()
        server.stop()
        server.kill()
