import os
import re
import shutil

import pytest

from .lab import LabServer, have_chromium, launch_browser

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "..", "..", "test-artifacts")
NOTEBOOKS = os.path.join(HERE, "..", "..", "notebooks")
SIM_TRAINER = "gemma_ft_widgets.runs.simulated_trainer"


def _ours(item) -> bool:
    return str(item.fspath).startswith(HERE + os.sep)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _ours(item):
            item.add_marker(pytest.mark.browser)
    if have_chromium():
        return
    if os.environ.get("GEMMA_FT_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError("GEMMA_FT_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing "
                                "(apt-get install chromium)")
    skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install chromium)")
    for item in items:
        if _ours(item):
            item.add_marker(skip)


def copy_notebooks(dest) -> str:
    """The repo's tutorial notebooks, without a local workspace or checkpoints, into `dest`."""
    shutil.copytree(NOTEBOOKS, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "gemma_ft_runs"))
    return str(dest)


def stop_runs(workspace) -> None:
    """Force-stop the workspace's active run, if any (kernel-independent, from this process)."""
    from gemma_ft_widgets.runs import ACTIVE_STATES, RunManager

    if not os.path.isdir(workspace):
        return
    manager = RunManager(workspace)
    if manager.status().state in ACTIVE_STATES:
        manager.stop(force=True)


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
    """A fresh browser context; tall, so that a whole panel fits in one screenshot."""
    context = browser.new_context(viewport={"width": 1280, "height": 1800})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def new_page(browser):
    """More fresh contexts for one test (e.g. after the server it talked to died)."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 1800})
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def workspaces():
    """`workspaces(path)` registers a workspace whose active run is force-stopped at teardown."""
    spaces = []

    def add(path):
        spaces.append(str(path))
        return str(path)

    yield add
    errors = []
    for ws in spaces:
        try:
            stop_runs(ws)
        except Exception as e:  # noqa: BLE001 - stop the others anyway
            errors.append(f"{ws}: {e!r}")
    assert not errors, f"could not stop runs: {errors}"


@pytest.fixture
def lab_root(tmp_path):
    """A folder the server serves: a copy of the repo's notebooks (no workspace in it)."""
    return copy_notebooks(tmp_path / "root")


@pytest.fixture
def make_lab(tmp_path, lab_root):
    """`make_lab(env=None)` starts a LabServer on `lab_root`; all are ended at teardown."""
    servers = []

    def make(env=None):
        server = LabServer(str(lab_root), str(tmp_path / "jupyter-home"), env=env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        if server.alive:
            server.delete_sessions()
        server.stop()
        server.kill()


class SharedLab:
    """One server for a module; each test gets a folder of its own under its root (see `folder`)."""

    def __init__(self, base, env=None):
        self.root = base / "root"
        self.root.mkdir()
        self.server = LabServer(str(self.root), str(base / "jupyter-home"), env=env).start()

    def folder(self, name: str) -> tuple[str, str]:
        """A fresh copy of the notebooks in root/<name>; (path relative to root, absolute path).

        A kernel's working folder is its notebook's folder, so with GEMMA_FT_WORKSPACE unset the
        notebooks' default workspace, gemma_ft_runs, lands in this test's folder.
        """
        rel = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:60]
        return rel, copy_notebooks(self.root / rel)

    def close(self) -> None:
        if self.server.alive:
            self.server.delete_sessions()
        self.server.stop()
        self.server.kill()


@pytest.fixture(scope="module")
def shared_lab_factory(tmp_path_factory):
    """`factory(env)`: a LabServer shared by the module's tests, ended after the module."""
    labs = []

    def make(env=None):
        lab = SharedLab(tmp_path_factory.mktemp("lab"), env=env)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
