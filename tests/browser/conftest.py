import os
import re
import shutil

import pytest

from .lab import LabServer, have_chromium, launch_browser, reap

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "..", "..", "test-artifacts")
NOTEBOOKS = os.path.join(HERE, "..", "..", "notebooks")
SIM_TRAINER = "gemma_ft_widgets.train.simulated"
_OWNED: list[str] = []  # folders of the current test, beyond its tmp_path (see no_leftovers)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item, for the failure screenshots below."""
    outcome = yield
    if _ours(item):
        rep = outcome.get_result()
        setattr(item, "rep_" + rep.when, rep)


def _watch_console(page) -> list:
    """Collect the page's console errors and uncaught exceptions (kept for failure reports)."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: seen.append(f"pageerror: {e}"))
    page.gft_console = seen
    return seen


def _failure_screenshots(request, pages) -> None:
    """A screenshot and the console messages of each page, when the test failed."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    os.makedirs(ARTIFACTS, exist_ok=True)
    for i, page in enumerate(pages):
        try:
            page.screenshot(path=os.path.join(ARTIFACTS, f"FAILED-{name}-{i}.png"))
        except Exception:  # noqa: BLE001 - a closed page, a dead browser: nothing to show
            pass
        with open(os.path.join(ARTIFACTS, f"FAILED-{name}-{i}-console.txt"), "w") as f:
            f.write("\n".join(getattr(page, "gft_console", [])) + "\n")


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    """After everything else of a test is torn down, no process of it may be left: nothing whose
    command line names its tmp_path or a folder it registered (servers, kernels, runs)."""
    import psutil

    _OWNED.clear()
    yield
    owned = [str(tmp_path)] + list(_OWNED)
    _OWNED.clear()
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid != os.getpid() and any(p in cmd for p in owned):
            left.append(proc)
    described = [f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}" for p in left]
    doomed = list(left)
    for proc in left:
        try:
            doomed += proc.children(recursive=True)
        except psutil.Error:
            pass
    reap(doomed, grace=0)
    assert not left, "the test left processes behind:\n" + "\n".join(described)


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


VIEWPORT = {"width": 1280, "height": 1800}  # tall, so that a whole panel fits in one screenshot


@pytest.fixture
def page(request, browser):
    """A fresh browser context (a screenshot goes to test-artifacts/FAILED-* if the test fails)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    _watch_console(page)
    yield page
    _failure_screenshots(request, [page])
    context.close()


@pytest.fixture
def new_page(request, browser):
    """More fresh contexts for one test (e.g. after the server it talked to died)."""
    contexts, pages = [], []

    def make():
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        pages.append(context.new_page())
        _watch_console(pages[-1])
        return pages[-1]

    yield make
    _failure_screenshots(request, pages)
    for context in contexts:
        context.close()


@pytest.fixture
def workspaces():
    """`workspaces(path)` registers a workspace whose active run is force-stopped at teardown."""
    spaces = []

    def add(path):
        spaces.append(str(path))
        _OWNED.append(str(path))
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
    """One server for a module; each test gets a folder of its own under its root (see `folder`)
    and ends its kernels with `end_test()`."""

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
        path = copy_notebooks(self.root / rel)
        _OWNED.append(path)
        return rel, path

    def end_test(self) -> None:
        """Shut the test's kernels down through the server; kill any that linger."""
        kernels = self.server.kernels()
        if self.server.alive:
            self.server.delete_sessions()
        left = reap(kernels, grace=15)
        assert not left, f"kernels that ignored their shutdown: {left}"

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
