"""Issue 11, defect 1: a live run whose workspace lock was deleted (by hand, a sync tool, a
cleanup script) is still found from its own folder: the supervisor and trainer hold
`<run>/.run.flock`, and their processes are found by identity (runs/liveness.py).

Before the fix, status said ORPHANED while the trainer stepped, start and resume launched a
second trainer, delete removed the live folder and stop said "nothing to stop"."""

from __future__ import annotations

import os

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunError, State, liveness, lockfile

from .conftest import wait_for, wait_state, wait_step
from .test_reliability import LONG, assert_all_gone, lock_pids, run_cli, steps_of


def _start_and_lose_the_lock(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=LONG, checkpoint_every=5))
    wait_step(manager, 3)
    pids = lock_pids(workspace)
    os.unlink(lockfile.lock_path(workspace))
    return run, pids


def test_a_run_whose_lock_was_deleted_stays_running_and_blocks_start_resume_delete(
        manager, make_config, workspace):
    run, pids = _start_and_lose_the_lock(manager, make_config, workspace)
    st = manager.status(run.name)
    assert st.state == State.RUNNING and "workspace lock is missing" in st.reason, (st.state, st.reason)
    assert st.active and st.lock_missing and not st.can_resume
    out = run_cli("status", "--workspace", workspace)
    assert "RUNNING" in out.stdout and "restore-lock" in out.stdout, out.stdout

    # start, resume and delete all refuse while a process of that folder lives
    with pytest.raises(RunError, match="already active: " + run.name):
        manager.start(make_config(max_steps=5))
    for args, wanted in ((("resume", run.name), "still active"), (("delete", run.name, "--yes"), "cannot delete")):
        out = run_cli(*args, "--workspace", workspace)
        assert out.returncode == 1 and wanted in out.stderr, (args, out.stderr)
    assert os.path.isdir(run.run_dir)
    assert [d for d in os.listdir(workspace) if not d.startswith(".")] == [run.name]

    # one trainer only: its steps keep increasing with no repeats
    step = manager.status(run.name).step
    wait_step(manager, step + 5)
    steps = steps_of(contract.read_jsonl(os.path.join(run.run_dir, contract.METRICS_NAME)))
    assert steps == list(range(1, len(steps) + 1))

    # stop reaches it (through a restored lock): a checkpoint, ABORTED, nothing left alive
    out = run_cli("stop", "--workspace", workspace)
    assert out.returncode == 0 and "stopped " + run.name in out.stdout, out.stdout + out.stderr
    assert_all_gone(pids)
    st = manager.status(run.name)
    assert st.state == State.ABORTED and not lockfile.read_lock(workspace).present
    assert not liveness.held(run.run_dir)


def test_restore_lock_puts_back_a_verified_lock(manager, make_config, workspace):
    run, pids = _start_and_lose_the_lock(manager, make_config, workspace)
    out = run_cli("restore-lock", "--workspace", workspace)
    assert out.returncode == 0 and "restored the lock of " + run.name in out.stdout, out.stderr
    data = lockfile.read_lock(workspace).data
    assert {data["supervisor_pid"], data["trainer_pid"]} == set(pids) and data["attempt"] == 1
    st = manager.status()
    assert st.state == State.RUNNING and st.reason == "" and not st.lock_missing
    with pytest.raises(RunError, match="nothing to restore"):
        manager.restore_lock(run.name)
    manager.stop()
    assert manager.status().state == State.ABORTED  # the supervisor wrote its result, removed the lock
    assert_all_gone(pids)
    assert not lockfile.read_lock(workspace).present


def test_with_the_flock_file_deleted_too_the_process_scan_still_finds_the_run(manager, make_config, workspace):
    run, pids = _start_and_lose_the_lock(manager, make_config, workspace)
    os.unlink(liveness.flock_path(run.run_dir))
    procs = liveness.processes(run.run_dir)
    assert {p.pid for p in procs.values()} == set(pids), procs
    for action in (lambda: manager.resume(run.name), lambda: manager.delete(run.name)):
        with pytest.raises(RunError, match="alive|active"):
            action()
    assert os.path.isdir(run.run_dir)
    manager.restore_lock(run.name)
    manager.stop(force=True)
    assert_all_gone(pids)


def test_a_run_that_ended_while_its_lock_was_missing_reads_as_ended(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=30))
    wait_step(manager, 2)
    os.unlink(lockfile.lock_path(workspace))
    wait_for(lambda: manager.status(run.name).state == State.FINISHED, 30, what="FINISHED")
    assert not liveness.held(run.run_dir)
    manager.start(make_config(max_steps=3))  # nothing blocks a new run
    wait_state(manager, State.FINISHED)


def test_the_panel_restores_a_deleted_lock(manager, make_config, workspace, make_panel):
    """The panel's "Restore lock" shows while status says the lock is missing, and writes it
    back through RunManager.restore_lock (what `gemma-ft restore-lock` calls)."""
    p = make_panel()
    button = p.dashboard.restore_lock_button
    run, pids = _start_and_lose_the_lock(manager, make_config, workspace)
    wait_for(lambda: p.refresh() or p.state == "RUNNING", 30, what="the panel shows the run")
    assert button.layout.display != "none" and not button.disabled
    assert "workspace lock is missing" in p.dashboard.phase.value
    button.click()
    assert p.wait_actions(60)
    assert "restored the lock of " + run.name in p.dashboard.message.value, p.dashboard.message.value
    lock = lockfile.read_lock(workspace)
    assert lock.present and lockfile.names(lock.data, run.run_dir)
    assert set(lock_pids(workspace)) == set(pids)
    p.refresh()
    assert button.layout.display == "none" and not manager.status(run.name).lock_missing
    assert p.state == "RUNNING" and "workspace lock is missing" not in p.dashboard.phase.value
