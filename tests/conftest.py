"""Shared fixtures: a temporary workspace, a RunManager on the simulated trainer, waiting with
timeouts, and a finalizer that ends every process a test started (by verified identity)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State, lockfile
from gemma_ft_widgets.runs.status import check_lock

SIM_TRAINER = "gemma_ft_widgets.train.simulated"
STEP_TIME = "0.02"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_state(manager: RunManager, states, run=None, timeout: float = 30.0):
    """Wait until the run (default: the workspace's) is in one of `states`; return its status."""
    states = {states} if isinstance(states, State) else set(states)
    last = {}

    def check():
        st = manager.status(run)
        last["st"] = st
        return st if st.state in states else None

    try:
        return wait_for(check, timeout, what=f"state in {sorted(s.value for s in states)}")
    except AssertionError as e:
        st = last.get("st")
        raise AssertionError(f"{e}; last: {st.state.value if st else None} {st.reason if st else ''}") from None


def wait_step(manager: RunManager, step: int, timeout: float = 30.0):
    return wait_for(lambda: (lambda st: st if (st.step or 0) >= step else None)(manager.status()),
                    timeout, what=f"step {step}")


@pytest.fixture
def sim_env(monkeypatch):
    """Subprocesses (supervisor, trainer, CLI) inherit this: the simulated trainer, fast steps."""
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_SIM_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv(contract.WORKSPACE_ENV, raising=False)
    monkeypatch.setenv(contract.TRAINER_ENV, SIM_TRAINER)
    monkeypatch.setenv("GEMMA_FT_SIM_STEP_TIME", STEP_TIME)
    return monkeypatch


@pytest.fixture
def dataset(tmp_path) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": f"example number {i}"}) + "\n" for i in range(20)))
    return str(path)


@pytest.fixture
def make_config(dataset):
    def make(**overrides) -> dict:
        return {"model": "tiny", "dataset": dataset, "batch_size": 1, "max_steps": 40, "warmup_steps": 0,
                "checkpoint_every": 10, "eval_every": 10, **overrides}

    return make


@pytest.fixture
def workspace(tmp_path, sim_env) -> str:
    ws = tmp_path / "ws"
    ws.mkdir()
    yield str(ws)
    _cleanup(str(ws))


@pytest.fixture
def manager(workspace) -> RunManager:
    return RunManager(workspace, trainer=SIM_TRAINER)


def _cleanup(workspace: str) -> None:
    """End whatever a test left running: the locked run (verified), then our own children."""
    if os.path.isdir(workspace):
        lock = lockfile.read_lock(workspace)
        if lock.data and check_lock(lock.data).procs:
            RunManager(workspace).stop(force=True, kill_timeout=10)
        for _ in range(5):  # runs whose lock a test deleted: stop() restores it from their folder
            if not lockfile.read_lock(workspace).present and not RunManager(workspace).stop(
                    force=True, kill_timeout=10).nothing_to_stop:
                continue
            break
    for child in psutil.Process().children(recursive=True):  # verified: our own descendants
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=5)


def verified_processes(workspace: str) -> dict:
    """The lock's verified live processes, by role."""
    lock = lockfile.read_lock(workspace)
    return check_lock(lock.data).procs if lock.data else {}


@pytest.fixture
def signal_recorder(tmp_path):
    """A live process that is not ours: it records every catchable signal it receives."""
    log = tmp_path / "signals.log"
    code = ("import signal, sys, time\n"
            "def h(s, f):\n"
            f"    open({str(log)!r}, 'a').write(str(s) + '\\n')\n"
            "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
            "    signal.signal(s, h)\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.signals_log = log
    yield proc
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def panels():
    """ControlPanels a test made: closed, and their button threads joined, at teardown."""
    made = []
    yield made
    for p in made:
        p.close()
        p.wait_actions(30)


@pytest.fixture
def make_panel(workspace, panels):
    """make_panel(**kwargs): a ControlPanel on `workspace` (poll=False unless given)."""
    from gemma_ft_widgets.ui import ControlPanel

    def make(**kwargs):
        kwargs.setdefault("poll", False)
        p = ControlPanel(workspace, **kwargs)
        panels.append(p)
        return p

    return make


def needs_mount(reason: str):
    """Skip a test that needs root's tmpfs mounts where they are impossible, unless
    GEMMA_FT_REQUIRE_MOUNTS=1 (CI, which runs as root): there the same reason fails the test."""
    if os.environ.get("GEMMA_FT_REQUIRE_MOUNTS") == "1":
        pytest.fail(f"GEMMA_FT_REQUIRE_MOUNTS=1, but {reason}")
    pytest.skip(reason)
