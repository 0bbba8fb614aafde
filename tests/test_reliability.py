"""Reliability matrix (docs/lifecycle.md): the lifecycle scenarios and faults that the other
test files do not already prove, with real processes and real signals on the simulated trainer.

Each test names its scenario number or fault from docs/lifecycle.md. Kernel-level scenarios are
in test_reliability_kernel.py, the Jupyter server in test_reliability_server.py, the soak in
test_reliability_soak.py and disk full (the real trainer) in test_reliability_disk.py.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from gemma_ft_widgets import cli, contract, datasets
from gemma_ft_widgets.config import ConfigError
from gemma_ft_widgets.runs import RunError, RunManager, State, identity, lockfile
from gemma_ft_widgets.runs.status import check_lock
from gemma_ft_widgets.ui import ControlPanel

from .conftest import SIM_TRAINER, wait_for, wait_state, wait_step

LONG = 100_000  # max_steps of a run that only ends when stopped
PACKAGE = os.path.dirname(os.path.abspath(contract.__file__))
RUN_FILES = {contract.CONFIG_NAME, contract.STATUS_LOG_NAME, contract.METRICS_NAME, contract.STDOUT_NAME,
             contract.STDERR_NAME, contract.SUPERVISOR_LOG_NAME, contract.RESULT_NAME}


# -- helpers -------------------------------------------------------------------------------
def steps_of(events) -> list[int]:
    return [e["step"] for e in events if e.get("event") == "step"]


def lock_pids(workspace: str) -> dict[int, float]:
    """pid -> create time of every process the (active) lock names, once the trainer runs."""
    def read():
        data = lockfile.read_lock(workspace).data
        if data and data.get("trainer_pid") and len(data.get("create_times") or {}) == 2:
            return data
        return None

    data = wait_for(read, 30, what="a lock naming the trainer")
    return {int(pid): t for pid, t in data["create_times"].items()}


def gone(pid: int, create_time: float) -> bool:
    """The process is gone (a zombie, or a new process reusing the pid, counts as gone)."""
    try:
        p = psutil.Process(pid)
        return p.status() == psutil.STATUS_ZOMBIE or abs(p.create_time() - create_time) > 0.01
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(pids: dict[int, float]) -> None:
    wait_for(lambda: all(gone(p, t) for p, t in pids.items()), 15,
             what=f"every process of the run gone: {sorted(pids)}")


def run_cli(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def dead_identity() -> dict:
    """The identity of a process that has exited (its pid is free or reused)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ident = identity.describe(p.pid)
    p.kill()
    p.wait()
    return ident


def rewrite_lock(workspace: str, **changes) -> None:
    """Replace keys of the lock as they would read after a reboot / container restart."""
    with lockfile.guard(workspace):
        data = lockfile.read_lock(workspace, locked=True).data
        data.update(changes)
        contract.atomic_write_json(lockfile.lock_path(workspace), data, mode=lockfile.LOCK_MODE)


def kill_group(workspace: str) -> dict:
    """SIGKILL the run's whole process group, as a power cut or `docker kill` would."""
    data = lockfile.read_lock(workspace).data
    pids = lock_pids(workspace)
    os.killpg(data["pgid"], signal.SIGKILL)
    assert_all_gone(pids)
    wait_for(lambda: not identity.group_alive(data["pgid"]), 15, what="group gone")
    return data


def assert_never_signalled(proc) -> None:
    assert proc.poll() is None, "the foreign process was killed"
    assert not proc.signals_log.exists(), f"the foreign process got signals: {proc.signals_log.read_text()}"


@pytest.fixture
def panels():
    made: list[ControlPanel] = []
    yield made
    for p in made:
        p.close()
        p.wait_actions(30)


@pytest.fixture
def make_panel(workspace, panels):
    def make(**kwargs) -> ControlPanel:
        kwargs.setdefault("poll", False)
        p = ControlPanel(workspace, **kwargs)
        panels.append(p)
        return p

    return make


def refresh_until(panel: ControlPanel, predicate, timeout: float = 30.0, what: str = "condition"):
    def check():
        panel.refresh()
        return predicate()

    return wait_for(check, timeout, what=what)


def shown(widget) -> bool:
    return widget.layout.display != "none"


# -- fault: SIGKILL of the supervisor only -------------------------------------------------
def test_sigkill_of_the_supervisor_alone_lets_training_finish_and_reports_finished(manager, make_config, workspace):
    """Fault "supervisor killed": the trainer goes on; when it ends on its own, its `final`
    event stands in for the result.json nobody wrote (was: ORPHANED for a finished run)."""
    run = manager.start(make_config(max_steps=120, checkpoint_every=40))
    wait_step(manager, 5)
    pids = lock_pids(workspace)
    lock = lockfile.read_lock(workspace).data
    os.kill(lock["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: gone(lock["supervisor_pid"], pids[lock["supervisor_pid"]]), 10, what="supervisor gone")
    st = manager.status()
    assert st.state == State.RUNNING and st.active and "supervisor" in st.reason and "gone" in st.reason
    before = st.step
    assert wait_step(manager, before + 5).trainer_pid == lock["trainer_pid"]  # training is unaffected

    st = wait_state(manager, State.FINISHED, timeout=60)
    assert st.step == 120 and st.last_checkpoint == "checkpoints/step_120" and not st.active
    assert "supervisor died before writing result.json" in st.reason and not st.can_resume
    assert not os.path.exists(os.path.join(run.run_dir, contract.RESULT_NAME))
    assert_all_gone(pids)
    with pytest.raises(RunError, match="nothing to resume"):
        manager.resume()
    assert manager.stop().nothing_to_stop
    second = RunManager(workspace).start(make_config(max_steps=3))  # the stale lock never blocks
    assert wait_state(manager, State.FINISHED, run=second).run_dir == second.run_dir
    assert manager.status(run).state == State.FINISHED
    assert open(os.path.join(run.run_dir, contract.STATUS_LOG_NAME)).read().splitlines()[-1].split()[1] == "FINISHED"


def test_sigkill_of_the_supervisor_alone_then_stop_is_aborted_with_a_result(manager, make_config, workspace):
    """Fault "supervisor killed", then the user stops: the stop writes the result itself."""
    run = manager.start(make_config(max_steps=LONG))
    wait_step(manager, 3)
    pids = lock_pids(workspace)
    lock = lockfile.read_lock(workspace).data
    os.kill(lock["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: gone(lock["supervisor_pid"], pids[lock["supervisor_pid"]]), 10, what="supervisor gone")
    report = manager.stop(timeout=20)
    assert report.sent[0].startswith("SIGINT to trainer") and report.group_gone
    assert report.state == State.ABORTED
    assert_all_gone(pids)
    result = json.load(open(os.path.join(run.run_dir, contract.RESULT_NAME)))
    assert result["state"] == "ABORTED" and result["attempt"] == 1
    st = manager.status()
    assert st.can_resume and st.last_checkpoint == f"checkpoints/step_{st.step}"
    assert not lockfile.read_lock(workspace).present
