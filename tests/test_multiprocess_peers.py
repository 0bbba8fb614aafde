"""Issue 16: the orphan verdict of a multi-process run considers every process the lock names.
Real supervisor and trainer processes (the simulated trainer, 2 processes), real SIGKILLs."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from gemma_ft_widgets.runs import RunError, State, lockfile

from .conftest import wait_for, wait_state


def test_supervisor_and_process_0_gone_but_process_1_alive_is_no_resumable_orphan(manager, make_config):
    """Supervisor and process 0 SIGKILLed, process 1 still running (as a peer hung in a
    collective would): the verdict names process 1, the run stays active, a resume is refused
    (it would start beside process 1); `stop` ends process 1, after which it is resumable."""
    manager.start(make_config(max_steps=100000, batch_size=2, num_processes=2))
    wait_state(manager, State.RUNNING, timeout=60)
    lock = wait_for(lambda: (lambda d: d if d and len(d.get("trainers") or []) == 2 else None)(
        lockfile.read_lock(manager.workspace).data), what="the lock to name both processes")
    peer = next(t for t in lock["trainers"] if t["process"] == 1)
    for pid in (lock["supervisor_pid"], lock["trainer_pid"]):  # ours: started by this test's manager
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(lock["trainer_pid"]) or
             psutil.Process(lock["trainer_pid"]).status() == psutil.STATUS_ZOMBIE, what="process 0 gone")

    st = wait_state(manager, State.ORPHANED, timeout=30)
    assert f"process 1 (pid {peer['pid']}) still runs" in st.reason, st.reason
    assert st.active and not st.can_resume
    assert [p["alive"] for p in st.processes] == [False, True]
    with pytest.raises(RunError, match="still active: .*process 1 .* still runs"):
        manager.resume()
    assert psutil.Process(peer["pid"]).is_running()

    report = manager.stop(timeout=5, term_timeout=5)
    assert not report.nothing_to_stop and report.group_gone
    st = manager.status()
    assert st.state == State.ABORTED and "supervisor was gone" in st.reason and st.can_resume, st.reason
    assert not any(p["alive"] for p in st.processes or [])
