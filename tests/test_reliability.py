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
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from gemma_ft_widgets import contract, datasets
from gemma_ft_widgets.config import ConfigError
from gemma_ft_widgets.runs import RunError, RunManager, State, identity, lockfile
from gemma_ft_widgets.ui import ControlPanel

from .conftest import SIM_TRAINER, needs_mount, wait_for, wait_state, wait_step

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


def assert_whole_history(x, logged: int) -> None:
    """`x`: the steps a panel's loss line shows. It starts at step 1 and reaches `logged`; below
    the decimation threshold every step is there (no gap), above it the decimated line still
    spans the whole history."""
    from gemma_ft_widgets.ui.plots import MAX_POINTS

    x = [int(v) for v in x]
    assert x and x[0] == 1 and x[-1] >= logged, (x[:5], x[-5:], logged)
    assert x == sorted(set(x))
    if x[-1] <= MAX_POINTS:
        assert x == list(range(1, x[-1] + 1)), "a gap in the history"
    else:
        assert len(x) <= MAX_POINTS


def assert_never_signalled(proc) -> None:
    assert proc.poll() is None, "the foreign process was killed"
    assert not proc.signals_log.exists(), f"the foreign process got signals: {proc.signals_log.read_text()}"


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


# -- 2, 3, 4: every ending keeps the run folder --------------------------------------------
@pytest.mark.parametrize("ending", ["finished", "failed", "aborted"])
def test_every_ending_keeps_the_run_folder_with_its_logs_checkpoints_and_result(
        manager, make_config, sim_env, workspace, ending):
    """Scenarios 2-4: what is on disk after FINISHED, FAILED and ABORTED; nothing is deleted
    and every process the lock named is gone (for an abort, the whole process group)."""
    if ending == "failed":
        sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "25")
    run = manager.start(make_config(max_steps=30 if ending == "finished" else LONG, checkpoint_every=10))
    wait_step(manager, 12)
    pids = lock_pids(workspace)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    if ending == "aborted":
        report = manager.stop(timeout=20)
        assert report.group_gone and report.sent[0].startswith("SIGINT")
    st = manager.wait(timeout=60)
    assert_all_gone(pids)
    assert not identity.group_alive(pgid)
    assert not lockfile.read_lock(workspace).present

    files = set(os.listdir(run.run_dir))
    assert RUN_FILES <= files, RUN_FILES - files
    result = json.load(open(os.path.join(run.run_dir, contract.RESULT_NAME)))
    steps = steps_of(manager.metrics(run)[0])
    assert steps == list(range(1, steps[-1] + 1))  # the whole history, no gap
    last_status = open(os.path.join(run.run_dir, contract.STATUS_LOG_NAME)).read().splitlines()[-1]
    assert last_status.split()[1] == st.state.value == result["state"]
    if ending == "finished":
        assert st.state == State.FINISHED and result["final_step"] == 30 and result["exit_code"] == 0
        assert st.checkpoints == [10, 20, 30] and not st.can_resume
    elif ending == "failed":
        assert st.state == State.FAILED and result["exit_code"] == 1
        assert "simulated crash at step 25" in st.reason  # the tail of stderr
        assert "Traceback" in open(os.path.join(run.run_dir, contract.STDERR_NAME)).read()
        assert st.checkpoints == [10, 20] and st.can_resume  # from the last checkpoint
    else:
        assert st.state == State.ABORTED and result["exit_code"] == contract.EXIT_ABORTED
        assert st.last_checkpoint == f"checkpoints/step_{steps[-1]}" and st.can_resume
        assert os.path.exists(os.path.join(run.run_dir, contract.STOP_REQUEST_NAME))


# -- 6: a second run after any ending never hangs ------------------------------------------
@pytest.mark.parametrize("before", ["finished", "failed", "aborted", "force_killed", "orphaned",
                                    "stale_lock_with_result", "corrupt_lock"])
def test_a_second_run_starts_at_once_after_any_ending(manager, make_config, sim_env, workspace, before):
    """Scenario 6: after a completed, failed, aborted or orphaned run, and with a stale or
    corrupt lock left behind, Start succeeds at once and the first run keeps its state."""
    if before == "failed":
        sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "3")
    first = manager.start(make_config(max_steps=5 if before in ("finished", "failed", "stale_lock_with_result")
                                      else LONG, checkpoint_every=2))
    if before in ("finished", "stale_lock_with_result"):
        wait_state(manager, State.FINISHED)
    elif before == "failed":
        wait_state(manager, State.FAILED)
        sim_env.delenv("GEMMA_FT_SIM_CRASH_AT")
    elif before == "aborted":
        wait_step(manager, 2)
        manager.stop(timeout=20)
    elif before == "force_killed":
        wait_step(manager, 2)
        manager.stop(force=True)
    else:  # orphaned / corrupt_lock: the group dies under the run, the lock stays
        wait_step(manager, 3)
        kill_group(workspace)
    if before == "stale_lock_with_result":  # the supervisor died between its result and the unlock
        ghost = dead_identity()
        with lockfile.guard(workspace):
            assert lockfile.create_lock(workspace, {
                "run_dir": first.run_dir, "supervisor_pid": ghost["pid"], "trainer_pid": None,
                "pgid": ghost["pid"], "create_times": {str(ghost["pid"]): ghost["create_time"]},
                "cmdline": ghost["cmdline"], "trainer_cmdline": None, "hostname": socket.gethostname(),
                "boot_id": identity.boot_id(), "started_at": contract.utc_now(), "attempt": 1})
    if before == "corrupt_lock":
        with open(lockfile.lock_path(workspace), "w") as f:
            f.write('{"run_dir": "/trunc')
    first_state = manager.status(first).state
    expected = {"finished": State.FINISHED, "failed": State.FAILED, "aborted": State.ABORTED,
                "force_killed": State.ABORTED, "orphaned": State.ORPHANED, "corrupt_lock": State.ORPHANED,
                "stale_lock_with_result": State.FINISHED}[before]
    assert first_state == expected

    other = RunManager(workspace)  # another kernel or terminal
    t0 = time.monotonic()
    second = other.start(make_config(max_steps=8))
    assert time.monotonic() - t0 < 8, "start waited on a dead run"
    assert wait_state(other, State.FINISHED, run=second).run_dir == second.run_dir
    assert other.status(first).state == expected and os.path.isdir(first.run_dir)
    assert not lockfile.read_lock(workspace).present
    assert {r.run_name for r in other.runs()} == {first.name, second.name}


# -- 8: the notebook tab closed and reopened (kernel still alive) --------------------------
def test_a_hidden_panel_pauses_and_catches_up_with_the_whole_history_when_shown_again(make_panel, sim_env):
    """Scenario 8, kernel kept: closing the tab removes the panel's views (polling pauses);
    reopening shows it again and it catches up with every step logged meanwhile."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.02")
    p = make_panel(poll=True, poll_interval=0.05)
    assert p.wait_ready(10)
    for name, value in dict(max_steps=LONG, warmup_steps=0, eval_every=1000, checkpoint_every=1000).items():
        p.form.fields[name].value = value
    p.form.start_button.click()
    assert p.wait_actions(30)
    wait_for(lambda: p.state == "RUNNING" and len(p.dashboard.loss_line.x) >= 5, 30, what="points")
    p._view_count = 1  # rendered by the front end
    p._view_count = 0  # the tab was closed: no view left
    assert p.paused
    time.sleep(0.2)
    frozen = len(p.dashboard.loss_line.x)
    polls = p.polls
    wait_step(p.manager, frozen + 30)
    assert p.polls == polls and len(p.dashboard.loss_line.x) == frozen  # nothing read while hidden
    p._view_count = 1  # the notebook was reopened
    logged = p.manager.status().step
    wait_for(lambda: len(p.dashboard.loss_line.x) >= logged, 10, what="caught up")
    assert_whole_history(p.dashboard.loss_line.x, logged)
    assert p.poll_errors == 0
    p.manager.stop(force=True)


# -- 10: the browser connection drops; the kernel-side poller goes on ---------------------
def test_panel_keeps_polling_through_transient_read_errors_and_catches_up(make_panel, sim_env, monkeypatch, workspace):
    """Scenario 10: the poller reads files, not the browser connection. Transient read
    failures of metrics.jsonl (a network file system hiccup, seen only by the kernel's threads
    here) are reported, polling goes on, nothing is lost and the training never notices."""
    import builtins

    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.02")
    p = make_panel(poll=True, poll_interval=0.05)
    assert p.wait_ready(10)
    p.manager.start(make_config_for(p, max_steps=LONG))
    wait_for(lambda: p.state == "RUNNING" and len(p.dashboard.loss_line.x) >= 5, 30, what="points")
    pids = lock_pids(workspace)
    broken = threading.Event()
    broken.set()
    main = threading.current_thread()
    real_open, real_os_open = builtins.open, os.open

    def failing(path) -> bool:
        return (broken.is_set() and threading.current_thread() is not main
                and os.fspath(path).endswith(contract.METRICS_NAME))

    def flaky_open(file, *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and failing(os.fsdecode(file)):
            raise OSError(5, "Input/output error", os.fsdecode(file))
        return real_open(file, *a, **k)

    def flaky_os_open(path, *a, **k):
        if failing(os.fsdecode(path)):
            raise OSError(5, "Input/output error", os.fsdecode(path))
        return real_os_open(path, *a, **k)

    polls = p.poll_errors
    monkeypatch.setattr(builtins, "open", flaky_open)
    monkeypatch.setattr(os, "open", flaky_os_open)
    wait_for(lambda: p.poll_errors >= polls + 5, 10, what="failed polls")
    stuck = int(p.dashboard.loss_line.x[-1])
    wait_step(RunManager(workspace), stuck + 20)
    broken.clear()  # the file system is back
    assert p.polling
    logged = RunManager(workspace).status().step
    wait_for(lambda: int(p.dashboard.loss_line.x[-1]) >= logged, 10, what="caught up")
    assert_whole_history(p.dashboard.loss_line.x, logged)  # no gap
    assert any("Input/output error" in m for m in p.messages)
    st = RunManager(workspace).status()
    assert st.state == State.RUNNING and not st.stop_requested
    assert all(not gone(pid, t) for pid, t in pids.items())  # the same processes, untouched
    p.manager.stop(force=True)


def make_config_for(panel: ControlPanel, **values) -> dict:
    return {**panel.form.values(), "warmup_steps": 0, "eval_every": 1000, "checkpoint_every": 1000, **values}


# -- 13, 14: reboot, container restart ------------------------------------------------------
@pytest.mark.parametrize("restart", ["reboot", "container_pids_gone", "container_pids_reused"])
def test_after_a_reboot_or_container_restart_the_run_is_orphaned_and_resumes(
        manager, make_config, workspace, signal_recorder, make_panel, restart):
    """Scenarios 13 and 14: the lock survives on the disk or volume, the processes do not.
    After a reboot the boot id differs; after a container restart (same boot id, same
    hostname) the pids are gone or belong to other programs of the new container. Either way:
    ORPHANED with the reason, nothing signalled, Resume continues from the last checkpoint."""
    run = manager.start(make_config(max_steps=60, checkpoint_every=5))
    wait_step(manager, 12)
    old = kill_group(workspace)
    if restart == "reboot":
        rewrite_lock(workspace, boot_id="boot-before-the-power-cut")
    elif restart == "container_pids_reused":  # the old pids now name processes of the new container
        reused = signal_recorder.pid
        rewrite_lock(workspace, supervisor_pid=reused, trainer_pid=reused, pgid=os.getpgid(reused),
                     create_times={str(reused): old["create_times"][str(old["supervisor_pid"])]})
    st = manager.status()
    assert st.state == State.ORPHANED and st.can_resume and not st.active
    assert {"reboot": "rebooted", "container_pids_gone": "is gone",
            "container_pids_reused": "belongs to another program"}[restart] in st.reason
    assert manager.stop(force=True).nothing_to_stop
    panel = make_panel()
    assert panel.view == "orphaned" and shown(panel.outcome.resume_button) and shown(panel.outcome.clean_button)
    assert not shown(panel.dashboard.controls)
    ckpt = st.checkpoints[-1]
    assert ckpt >= 10

    panel.outcome.resume_button.click()
    assert panel.wait_actions(30)
    st = wait_state(manager, State.FINISHED, timeout=60)
    assert st.run_dir == run.run_dir and st.attempt == 2 and st.step == 60
    events, _ = manager.metrics(run)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["resume_step"] for s in starts] == [None, ckpt]
    assert steps_of(events)[:12] == list(range(1, 13))  # the first attempt's history is kept
    assert_never_signalled(signal_recorder)


# -- 15: the OOM killer -------------------------------------------------------------------
def test_oom_kill_shows_failed_in_the_panel_and_never_blocks_a_new_run(make_panel, workspace, sim_env):
    """Scenario 15 (OOM): SIGKILL of the trainer. The panel shows FAILED with the reason, not
    RUNNING; Start is not blocked; the new run starts."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.02")
    p = make_panel()
    p.manager.start(make_config_for(p, max_steps=LONG, checkpoint_every=5))
    refresh_until(p, lambda: p.state == "RUNNING" and p.dashboard.progress.value >= 6, what="running")
    pids = lock_pids(workspace)
    trainer = lockfile.read_lock(workspace).data["trainer_pid"]
    os.kill(trainer, signal.SIGKILL)  # what the OOM killer sends
    refresh_until(p, lambda: p.state == "FAILED", what="FAILED")
    assert_all_gone(pids)
    assert p.view == "failed" and "out of memory" in p.outcome.banner.value
    assert p.active_run == "" and p.form.active_run == ""
    assert shown(p.outcome.resume_button)  # it has checkpoints
    p.outcome.new_run_button.click()
    assert p.view == "form" and not p.form.start_button.disabled
    p.form.fields["max_steps"].value = 5
    p.form.start_button.click()
    assert p.wait_actions(30) and "Started" in p.form.message.value
    refresh_until(p, lambda: p.state == "FINISHED", what="the new run FINISHED")


# -- 17: a lock from another host ---------------------------------------------------------
def test_a_run_on_another_host_is_shown_never_touched_and_blocks_start_until_clean_force(
        make_panel, workspace, make_config, signal_recorder):
    """Scenario 17: a shared workspace holds the lock of a run on another machine. The panel
    shows it with its progress, without Abort; Start is blocked; stop and clean refuse; only
    `clean --force` clears it, keeping its files. No local process is ever signalled."""
    run_dir = os.path.join(workspace, "tiny-on-other-host")
    os.makedirs(run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), {"model": "tiny", "max_steps": 50})
    pid = signal_recorder.pid  # a live local pid: must never be mistaken for the run
    with lockfile.guard(workspace):
        lockfile.create_lock(workspace, {
            "run_dir": run_dir, "supervisor_pid": pid, "trainer_pid": pid, "pgid": pid,
            "create_times": {str(pid): psutil.Process(pid).create_time()}, "cmdline": psutil.Process(pid).cmdline(),
            "trainer_cmdline": psutil.Process(pid).cmdline(), "hostname": "gpu-box-7.example",
            "boot_id": "other-boot", "started_at": contract.utc_now(), "attempt": 1})
    for step in range(1, 8):
        contract.append_jsonl(os.path.join(run_dir, contract.METRICS_NAME),
                              {"event": "step", "step": step, "loss": 2.0 - step / 10, "time": time.time()})
    p = make_panel()
    assert (p.state, p.view, p.run_dir) == ("RUNNING", "dashboard", run_dir)
    assert "gpu-box-7.example" in p.dashboard.phase.value and "cannot be verified" in p.dashboard.phase.value
    assert not shown(p.dashboard.controls) and not shown(p.dashboard.abort_button)
    assert list(p.dashboard.loss_line.x) == list(range(1, 8))
    assert p.form.active_run == "tiny-on-other-host"  # Start blocked
    with pytest.raises(RunError, match="gpu-box-7.example"):
        p.manager.start(make_config())
    out = run_cli("stop", "--force", "--workspace", workspace)
    assert out.returncode == 1 and "gpu-box-7.example" in out.stderr
    out = run_cli("clean", "--workspace", workspace)
    assert out.returncode == 1 and "--force" in out.stderr
    assert_never_signalled(signal_recorder)
    out = run_cli("clean", "--force", "--workspace", workspace)
    assert out.returncode == 0 and "cleared" in out.stdout
    p.refresh()
    assert p.form.active_run == "" and os.path.isdir(run_dir) and p.state == "ORPHANED"
    assert_never_signalled(signal_recorder)


# -- faults: stop --------------------------------------------------------------------------
def test_stop_when_the_processes_are_already_gone(manager, make_config, workspace):
    """Fault: stop after the group died under the run: nothing is signalled, it returns at
    once, says why, and the lock stays for clean/resume to decide."""
    manager.start(make_config(max_steps=LONG, checkpoint_every=2))
    wait_step(manager, 3)
    kill_group(workspace)
    t0 = time.monotonic()
    report = manager.stop(timeout=30)
    assert time.monotonic() - t0 < 2
    assert report.nothing_to_stop and not report.sent and "already gone" in report.message
    assert report.state == State.ORPHANED
    out = run_cli("stop", "--workspace", workspace)
    assert out.returncode == 1 and "already gone" in out.stderr
    assert lockfile.read_lock(workspace).present
    assert manager.status().can_resume


def test_two_stops_at_once_from_two_terminals(manager, make_config, workspace):
    """Fault "stop twice": two `gemma-ft stop` at the same moment. One stops the run, the
    other finds nothing to stop or joins it; the run is ABORTED once, with one checkpoint."""
    run = manager.start(make_config(max_steps=LONG))
    wait_step(manager, 3)
    pids = lock_pids(workspace)
    procs = [subprocess.Popen([sys.executable, "-m", "gemma_ft_widgets.cli", "stop", "--workspace", workspace],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert sorted(o[2] for o in outs) in ([0, 0], [0, 1]), outs
    for out, err, code in outs:
        assert ("stopped" in out) if code == 0 else ("nothing to stop" in err), (out, err)
    assert_all_gone(pids)
    st = manager.status()
    assert st.state == State.ABORTED and st.last_checkpoint == f"checkpoints/step_{st.step}"
    finals = [e for e in manager.metrics(run)[0] if e["event"] == "final"]
    assert len(finals) == 1 and finals[0]["state"] == "ABORTED"
    assert not lockfile.read_lock(workspace).present


# -- faults: corrupt files, seen by the panel ----------------------------------------------
def test_panel_shows_corrupt_lock_result_and_metrics_without_failing(make_panel, manager, make_config, workspace):
    """Fault "corrupt files": truncated result, garbage metrics lines and a truncated lock are
    shown as states with reasons in the panel, never as a broken panel."""
    run = manager.start(make_config(max_steps=6))
    wait_state(manager, State.FINISHED)
    with open(os.path.join(run.run_dir, contract.METRICS_NAME), "ab") as f:
        f.write(b'\x00\xffgarbage\n{"event":"step","step":7,"lo')
    with open(os.path.join(run.run_dir, contract.RESULT_NAME), "w") as f:
        f.write('{"state": "FINI')
    p = make_panel()
    assert (p.state, p.view) == ("FAILED", "failed") and "result file unreadable" in p.outcome.banner.value
    assert list(p.dashboard.loss_line.x) == [1, 2, 3, 4, 5, 6]
    os.remove(os.path.join(run.run_dir, contract.RESULT_NAME))
    with open(lockfile.lock_path(workspace), "w") as f:
        f.write("{")
    p.refresh()
    assert (p.state, p.view) == ("ORPHANED", "orphaned") and "lock file unreadable" in p.outcome.banner.value
    assert p.poll_errors == 0 and not any("failed" in m for m in p.messages)
    p.outcome.clean_button.click()
    assert p.wait_actions(30)
    assert not lockfile.read_lock(workspace).present


# -- fault: a read-only workspace ---------------------------------------------------------
@pytest.fixture
def small_mount(tmp_path):
    """Mount a small tmpfs (root only; CI runs as root). Yields (path, remount(options))."""
    if os.geteuid() != 0:
        needs_mount("mounting a tmpfs needs root (CI runs as root)")
    path = tmp_path / "mnt"
    path.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        needs_mount(f"cannot mount a tmpfs here: {out.stderr.strip()}")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)

    try:
        yield str(path), remount
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_a_read_only_workspace_with_runs_can_be_read_but_not_written(small_mount, sim_env, make_config, panels):
    """Fault "read-only workspace" (e.g. a volume mounted read-only to look at results): the
    panel and the CLI show every run; start, stop, resume and clean refuse, saying why."""
    ws, remount = small_mount
    m = RunManager(ws)
    run = m.start(make_config(max_steps=5))
    wait_state(m, State.FINISHED)
    aborted = m.start(make_config(max_steps=LONG))
    wait_step(m, 2)
    m.stop(timeout=20)
    remount("ro")
    p = ControlPanel(ws, poll=False)
    panels.append(p)
    assert (p.state, p.view, p.run_dir) == ("ABORTED", "finished", aborted.run_dir)
    assert [r.run_dir for r in p.history.model.rows] == [aborted.run_dir, run.run_dir]
    p.outcome.resume_button.click()
    assert p.wait_actions(30) and any("not writable" in m for m in p.messages)  # the panel's message log
    p.outcome.new_run_button.click()
    p.form.start_button.click()
    assert p.wait_actions(30) and "not writable" in p.form.message.value
    for args in (["status"], ["list"], ["logs", run.name], ["status", run.name, "--json"]):
        out = run_cli(*args, "--workspace", ws)
        assert out.returncode == 0, (args, out.stderr)
    assert json.loads(run_cli("status", run.name, "--json", "--workspace", ws).stdout)["state"] == "FINISHED"
    for args in (["stop"], ["resume"], ["clean"], ["delete", run.name, "--yes"]):
        out = run_cli(*args, "--workspace", ws)
        assert out.returncode == 1 and "not writable" in out.stderr, (args, out.stderr)
    assert sorted(os.listdir(ws)) == sorted([".training.lock.guard", run.name, aborted.name])


# -- fault: names that try to leave the workspace ------------------------------------------
def test_run_names_that_try_to_leave_the_workspace_are_refused(manager, make_config, workspace, tmp_path):
    """Fault "../": a run is only ever a folder directly inside the workspace, whatever the
    name, path or symlink a user (or a forged lock) gives."""
    run = manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    outside = tmp_path / "outside-run"
    outside.mkdir()
    contract.atomic_write_json(str(outside / contract.CONFIG_NAME), {"model": "tiny", "max_steps": 1})
    os.symlink(str(outside), os.path.join(workspace, "link-out"))
    hostile = ["..", "../outside-run", f"../{os.path.basename(workspace)}/../outside-run", str(outside),
               "link-out", ".", "", contract.LOCK_NAME, f"{run.name}/../../outside-run", "/etc", "~"]
    calls = {"status": manager.status, "logs": manager.logs, "metrics": manager.metrics,
             "run_config": manager.run_config, "resume": manager.resume, "delete": manager.delete,
             "resolve": manager.resolve}
    for name in hostile:
        for what, call in calls.items():
            with pytest.raises(RunError):
                call(name)
    for args in (["status", "../outside-run"], ["logs", str(outside)], ["resume", "link-out"],
                 ["delete", "..", "--yes"], ["export", "../outside-run", "--out", str(tmp_path / "x")]):
        out = run_cli(*args, "--workspace", workspace)
        assert out.returncode == 1 and "unknown run" in out.stderr, (args, out.stderr)
    assert os.path.isdir(outside) and os.listdir(outside) == [contract.CONFIG_NAME]
    assert manager.status(run.name).state == State.FINISHED  # the real run is untouched


@pytest.mark.parametrize("model", ["../models/my-ckpt", "../models/../models/my-ckpt/", "MODELS_ABS"])
def test_a_model_path_outside_the_workspace_still_names_a_run_folder_inside_it(
        workspace, tmp_path, sim_env, dataset, model):
    """Fault "model name with ../": a local checkpoint may live anywhere (it is only read);
    the run folder it names is always directly inside the workspace."""
    ckpt = tmp_path / "models" / "my-ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "tokenizer.model").write_bytes(b"\0")
    (ckpt / "_METADATA").write_text("{}")
    sim_env.chdir(workspace)  # relative model paths are relative to the working directory
    model = str(ckpt) if model == "MODELS_ABS" else model
    m = RunManager(workspace)
    run = m.start({"model": model, "dataset": dataset, "max_steps": 3, "warmup_steps": 0, "batch_size": 1})
    assert os.path.dirname(run.run_dir) == workspace and run.name.startswith("my-ckpt-")
    assert json.load(open(os.path.join(run.run_dir, contract.CONFIG_NAME)))["model"] == str(ckpt)
    wait_state(m, State.FINISHED)
    assert sorted(os.listdir(ckpt)) == ["_METADATA", "tokenizer.model"]


def test_hostile_model_names_give_safe_run_folder_names():
    """Whatever the model string, the run folder prefix has no separator and no dot-dot."""
    from gemma_ft_widgets.config import TrainingConfig

    for model in ["..", "../..", "/", "a/../../b", "x; rm -rf ~", "$(touch pwned)", "../../etc/passwd",
                  "..\\..\\win", "name with spaces", "\u00e9t\u00e9/../\u2603", "-rf", "."]:
        prefix = TrainingConfig(model=model).run_name_prefix()
        assert prefix and os.sep not in prefix and ".." not in prefix and not prefix.startswith(("-", "."))


# -- fault: bad datasets --------------------------------------------------------------------
@pytest.mark.parametrize("kind, content, message", [
    ("malformed_line", '{"text": "ok"}\n{"text": "broken\n{"text": "ok"}\n', "line 2: not valid JSON"),
    ("missing_field", '{"prompt": "p", "response": "r"}\n{"prompt": "only a prompt"}\n',
     "line 2: missing field(s) 'response'"),
    ("empty_file", "", "file is empty"),
    ("blank_lines_only", "\n\n  \n", "no examples"),
    ("giant_line", '{"text": "ok"}\n{"text": "' + "x" * 5000 + '"}\n', "line 2: line longer than 4096 bytes"),
])
def test_a_bad_dataset_is_refused_before_anything_is_created(tmp_path, sim_env, monkeypatch, kind, content, message):
    """Faults "dataset with a malformed line, a missing field, an empty file, a giant line":
    refused at Start with the file and line named; no workspace, folder or lock is made."""
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 4096)  # the 1 GB case is the next test
    path = tmp_path / f"{kind}.jsonl"
    path.write_text(content)
    ws = tmp_path / "ws"
    with pytest.raises(ConfigError) as e:
        RunManager(str(ws)).start({"model": "tiny", "dataset": str(path), "batch_size": 1, "max_steps": 5,
                                   "warmup_steps": 0})
    assert any(err.field == "dataset" and message in err.message for err in e.value.errors), e.value.errors
    assert f"{kind}.jsonl" in str(e.value)
    assert not ws.exists()


def test_a_1gb_line_is_refused_with_bounded_memory(tmp_path):
    """Fault "a dataset with a 1 GB line": a real (sparse) 1 GiB line is reported by line
    number by the config check and the panel's form, reading it in bounded chunks: the
    validating process's peak resident memory stays far below 1 GB."""
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "fine"}\n{"text": "')
        f.truncate(f.tell() + 2**30)  # a hole: a 1 GiB line that costs no disk
        f.seek(0, os.SEEK_END)
        f.write(b'"}\n{"text": "also fine"}\n')
    assert os.path.getsize(path) > 2**30
    code = f"""
import json
from gemma_ft_widgets.config import ConfigError, TrainingConfig
from gemma_ft_widgets.ui.form import ConfigForm
try:
    TrainingConfig.from_dict({{"model": "tiny", "dataset": {str(path)!r}, "batch_size": 1}})
    config_error = None
except ConfigError as e:
    config_error = str(e)
form = ConfigForm({str(tmp_path / 'uploads')!r}, defaults={{"dataset": {str(path)!r}, "batch_size": 1}})
# VmHWM: the peak of this process image. (ru_maxrss also counts the parent's RSS at fork,
# folded in at exec: a big pytest process would show through.)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({{"config": config_error, "form": form.errors["dataset"].value, "valid": form.valid,
                  "maxrss_kib": hwm}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "huge.jsonl line 2: line longer than 16 MiB" in got["config"]
    assert "huge.jsonl line 2" in got["form"] and not got["valid"]
    assert got["maxrss_kib"] * 1024 < 400 * 2**20, f"peak RSS {got['maxrss_kib'] // 1024} MiB"


# -- security --------------------------------------------------------------------------------
def package_sources() -> dict[str, ast.Module]:
    trees = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                trees[os.path.relpath(path, PACKAGE)] = ast.parse(open(path).read(), path)
    return trees


def calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_subprocesses_take_argument_lists_never_a_shell():
    """Security: no shell=True, os.system, os.popen or commands-style helpers anywhere, and
    every Popen/run gets a list (built in the code), never a string."""
    problems = []
    for rel, tree in package_sources().items():
        for node, func in calls(tree):
            where = f"{rel}:{node.lineno} {func}"
            if func in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                        "os.execl", "os.execlp", "os.spawnl", "os.spawnlp", "pty.spawn"):
                problems.append(where)
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(where + " shell=")
            if func.startswith("subprocess.") and func.split(".")[-1] in ("Popen", "run", "call", "check_call",
                                                                         "check_output"):
                first = node.args[0] if node.args else None
                if isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    problems.append(where + " with a string command")
    assert not problems, problems


# Every place that may send a signal, and why it is safe. Anything new must be added here.
SIGNAL_SITES = {
    ("runs/identity.py", "proc.send_signal"),  # signal_verified: psutil re-checks the create time
    ("runs/identity.py", "os.killpg"),  # group_alive (signal 0) / kill_group: a verified member leads it
    ("runs/supervisor.py", "trainer.send_signal"),  # its own unreaped child: the pid cannot be reused
    ("runs/sampling.py", "proc.kill"),  # a sampler past its timeout: its own unreaped child too
}


def test_signals_go_only_through_identity_checks():
    """Security: a process is signalled only after its identity was verified. The only calls
    that send signals are in runs/identity.py (verified by pid + create time + cmdline), the
    supervisor's forwarding to its own child, and the sampler's timeout kill of its own child."""
    found = set()
    for rel, tree in package_sources().items():
        for node, func in calls(tree):
            name = func.split(".")[-1]
            if name in ("kill", "killpg", "send_signal", "terminate", "pidfd_send_signal") or func in (
                    "signal.pthread_kill",):
                found.add((rel, func))
    assert found == SIGNAL_SITES, found ^ SIGNAL_SITES


def test_shell_metacharacters_in_paths_and_names_are_never_interpreted(tmp_path, sim_env, dataset):
    """Security: a workspace, dataset and model path full of shell syntax is used as plain
    text by the launcher, supervisor, trainer and CLI."""
    evil = tmp_path / "ws $(touch PWNED1); `touch PWNED2` && touch PWNED3 | x"
    evil.mkdir()
    data = tmp_path / "data;touch PWNED4.jsonl"
    data.write_text(open(dataset).read())
    sim_env.chdir(tmp_path)
    m = RunManager(str(evil))
    run = m.start({"model": "tiny", "dataset": str(data), "max_steps": 4, "warmup_steps": 0, "batch_size": 1})
    wait_state(m, State.FINISHED)
    out = run_cli("status", run.name, "--workspace", str(evil))
    assert out.returncode == 0 and "FINISHED" in out.stdout
    assert not [n for n in os.listdir(tmp_path) if n.startswith("PWNED")]
    assert not [n for n in os.listdir(evil) if n.startswith("PWNED")]


@pytest.mark.parametrize("umask", [0o027, 0o077, 0o000])
def test_run_folders_follow_the_umask_and_the_lock_is_never_world_writable(tmp_path, sim_env, dataset, umask):
    """Security: the run folder and its files get the user's umask (so a group-shared
    workspace works as the user set it up); the lock is 0644 whatever the umask."""
    ws = tmp_path / "ws"
    code = f"""
import json, os, stat, sys, time
os.umask({umask:#o})
from gemma_ft_widgets.runs import RunManager, lockfile
m = RunManager({str(ws)!r})
run = m.start({{"model": "tiny", "dataset": {dataset!r}, "max_steps": 3000, "warmup_steps": 0, "batch_size": 1,
               "checkpoint_every": 2}})
m.wait(until="RUNNING", timeout=60)
modes = {{"lock": os.stat(lockfile.lock_path(m.workspace)).st_mode & 0o777}}
m.stop(timeout=20)
for root, dirs, files in os.walk(run.run_dir):
    for n in dirs + files:
        p = os.path.join(root, n)
        modes[os.path.relpath(p, run.run_dir)] = os.stat(p).st_mode & 0o777
modes["."] = os.stat(run.run_dir).st_mode & 0o777
modes["workspace"] = os.stat(m.workspace).st_mode & 0o777
print(json.dumps(modes))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    modes = json.loads(out.stdout.strip().splitlines()[-1])
    assert modes.pop("lock") == 0o644
    assert len(modes) > 8 and any(k.startswith("checkpoints/step_") for k in modes)
    for rel, mode in modes.items():
        assert mode & umask == 0, f"{rel}: {mode:o} ignores umask {umask:o}"
        assert not mode & 0o002 or umask == 0, f"{rel}: world-writable"
    assert modes["."] == 0o777 & ~umask and modes[contract.RESULT_NAME] == 0o666 & ~umask


def test_config_paths_are_resolved_and_checked(tmp_path, dataset):
    """Security: paths from a config file are resolved against the file's folder, made
    absolute before the run starts, and checked: a model path must be a checkpoint folder."""
    from gemma_ft_widgets.config import TrainingConfig

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "c.json").write_text(json.dumps({"model": "tiny", "dataset": "../data.jsonl", "batch_size": 1}))
    cfg = TrainingConfig.from_json_file(str(configs / "c.json"))
    assert cfg.dataset == os.path.realpath(dataset) and os.path.isabs(cfg.dataset)
    (tmp_path / "not-a-model").mkdir()
    (configs / "bad.json").write_text(json.dumps({"model": str(configs / ".." / "not-a-model"),
                                                  "dataset": "../data.jsonl"}))
    with pytest.raises(ConfigError, match="does not look like a checkpoint directory"):
        TrainingConfig.from_json_file(str(configs / "bad.json"))
    (configs / "gone.json").write_text(json.dumps({"model": "../no/such/ckpt", "dataset": "../data.jsonl"}))
    with pytest.raises(ConfigError, match="checkpoint directory not found"):
        TrainingConfig.from_json_file(str(configs / "gone.json"))
    (configs / "missing.json").write_text(json.dumps({"model": "tiny", "dataset": "../../nope/../x.jsonl"}))
    with pytest.raises(ConfigError, match="file not found"):
        TrainingConfig.from_json_file(str(configs / "missing.json"))


def test_a_relative_model_path_in_a_config_file_is_relative_to_the_file(tmp_path, dataset, monkeypatch):
    from gemma_ft_widgets.config import TrainingConfig

    ckpt = tmp_path / "models" / "my-ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "tokenizer.model").write_bytes(b"\0")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "c.json").write_text(json.dumps({"model": "../models/my-ckpt", "dataset": "../data.jsonl",
                                                "batch_size": 1}))
    monkeypatch.chdir(ckpt)  # anywhere but the config's folder
    assert TrainingConfig.from_json_file(str(configs / "c.json")).model == str(ckpt)


def test_a_model_folder_is_recognised_at_most_one_level_down(tmp_path):
    from gemma_ft_widgets import models

    deep = tmp_path / "home" / "projects" / "old" / "run" / "checkpoints"
    deep.mkdir(parents=True)
    (deep / "checkpoint").write_text("")
    assert not models.is_local_checkpoint(str(tmp_path / "home"))


# -- fault: a reader polling while runs start ---------------------------------------------
def test_a_poller_never_sees_a_lock_naming_a_folder_that_does_not_exist_yet(manager, make_config, workspace,
                                                                            monkeypatch):
    """Found by the soak: a panel polling while Start ran got "unknown run" errors, because the
    lock named the new folder a few ms before it was created. The folder now exists (empty,
    so not yet listed) before the lock names it."""
    real_create = lockfile.create_lock
    order = []

    def create_lock(ws, data):
        order.append(os.path.isdir(data["run_dir"]))
        return real_create(ws, data)

    monkeypatch.setattr(lockfile, "create_lock", create_lock)
    errors, stop = [], threading.Event()

    def poll():  # what the panel's poller does on each tick
        reader = RunManager(workspace)
        while not stop.is_set():
            try:
                st = reader.status()
                if st.run_dir:
                    reader.metrics(st.run_dir)
                    reader.logs(st.run_dir, "status")
                reader.runs()
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

    readers = [threading.Thread(target=poll) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for _ in range(6):
            manager.start(make_config(max_steps=LONG))
            manager.stop(force=True)
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert not errors, errors[:3]
    assert order == [True] * 6


# -- fault: eight simultaneous starts and resumes of an orphaned run ------------------------
def test_eight_simultaneous_starts_and_resumes_of_an_orphan_launch_one_trainer(manager, make_config, workspace,
                                                                              tmp_path):
    """Fault "eight simultaneous starts", on the hardest case: an orphaned run's stale lock
    (which every starter may clear) and four `resume` racing four `start`. Exactly one wins;
    one trainer process exists; the losers say which run is active."""
    orphan = manager.start(make_config(max_steps=LONG, checkpoint_every=2))
    wait_step(manager, 4)
    kill_group(workspace)
    assert manager.status().state == State.ORPHANED
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(make_config(max_steps=LONG)))
    go = tmp_path / "go"
    code = ("import os, sys, time\nfrom gemma_ft_widgets import cli\n"
            "open(sys.argv[1], 'w').close()\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "sys.exit(cli.main(sys.argv[3:]))\n")
    commands = [["resume", orphan.name] if i % 2 else ["start", str(cfg)] for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"ready{i}"), str(go), *cmd,
                               "--workspace", workspace], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, cmd in enumerate(commands)]
    wait_for(lambda: all((tmp_path / f"ready{i}").exists() for i in range(8)), 60, what="8 ready")
    go.touch()
    outs = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    winners = [o for o in outs if o[2] == 0]
    assert len(winners) == 1, outs
    active = winners[0][0].strip()
    for out, err, code in outs:
        if code:
            assert "active" in err and os.path.basename(active) in err, err
    st = wait_state(manager, State.RUNNING)
    assert st.run_dir == active
    trainers = [p for p in psutil.process_iter(["cmdline"])
                if SIM_TRAINER in (p.info["cmdline"] or []) and (p.info["cmdline"] or [""])[-1].startswith(workspace)]
    assert len(trainers) == 1, [p.info["cmdline"] for p in trainers]
    if active == orphan.run_dir:  # a resume won: attempt 2 from the checkpoint
        assert st.attempt == 2
    else:
        assert manager.status(orphan).state == State.ORPHANED and len(manager.runs()) == 2


# -- the document itself --------------------------------------------------------------------
def test_every_test_docs_lifecycle_names_exists():
    """docs/lifecycle.md names its proofs as `file::test` (or `::test` for the same file as
    the previous one): each must be a test function in that file."""
    import re

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    doc = open(os.path.join(os.path.dirname(tests_dir), "docs", "lifecycle.md"), encoding="utf-8").read()
    current, missing, seen = None, [], 0
    for path, name in re.findall(r"`((?:[\w/]+/)?test_\w+\.py)?::(test_\w+)(?:\[[^\]]*\])?`", doc):
        current = path or current
        source = os.path.join(tests_dir, current)
        names = {n.name for n in ast.walk(ast.parse(open(source).read())) if isinstance(n, ast.FunctionDef)}
        seen += 1
        if name not in names:
            missing.append(f"{current}::{name}")
    assert seen > 80 and not missing, missing


# -- what a crash says ------------------------------------------------------------------------
ORBAX_ENOSPC = """Traceback (most recent call last):
  File "/x/loop.py", line 300, in save
    ckpt.wait_until_finished()
ValueError: RESOURCE_EXHAUSTED: Error writing local file "ckpt/_sharding": Failed to write 231 bytes to file 9: \
No space left on device [os_error_code='28']
RuntimeError: Event loop is closed
"""


@pytest.mark.parametrize("tail, cause, line", [
    (ORBAX_ENOSPC, "out of disk space", "ValueError: RESOURCE_EXHAUSTED: Error writing local file"),
    ("Traceback (most recent call last):\n  File \"s.py\", line 1, in step\n    f()\n"
     "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.50GiB.\n",
     "accelerator out of memory", "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED"),
    ("Traceback (most recent call last):\n  File \"d.py\", line 9, in load\n    x = f.read()\nMemoryError\n",
     "out of host memory", "MemoryError"),
    ("ERROR:absl:noise\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n    boom()\n"
     "RuntimeError: boom\nERROR:absl:cleanup after the crash failed\n", None, "RuntimeError: boom"),
    ("error: the model checkpoint is corrupt\n", None, "error: the model checkpoint is corrupt"),
])
def test_a_crash_reason_names_the_exception_and_any_resource_exhaustion(tail, cause, line):
    """Found by the disk-full test: orbax prints "RuntimeError: Event loop is closed" after the
    real traceback, and that line became the reason, hiding "No space left on device". The
    reason is now the exception closing the last traceback, led by a plain cause for disk
    full and out-of-memory errors."""
    from gemma_ft_widgets.runs.results import classify

    reason = classify(1, False, tail)["reason"]
    assert (reason.startswith(f"{cause}; trainer exited with code 1: ") if cause
            else reason.startswith("trainer exited with code 1: ")), reason
    assert line in reason and "Event loop is closed" not in reason and "cleanup after" not in reason


def test_an_earlier_attempts_error_never_explains_a_later_failure(manager, make_config, sim_env, workspace,
                                                                   make_panel):
    """The stderr log is appended across attempts: a resumed run's failure is explained by its
    own attempt's output only (the supervisor records where that output starts)."""
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "5")
    run = manager.start(make_config(max_steps=LONG, checkpoint_every=2))
    assert wait_state(manager, State.FAILED).checkpoints == [2, 4]
    with open(os.path.join(run.run_dir, contract.STDERR_NAME), "a") as f:
        f.write("OSError: [Errno 28] No space left on device\n")  # as if attempt 1 had filled the disk
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "7")
    manager.resume(run)
    st = wait_state(manager, State.FAILED)
    assert st.attempt == 2 and "simulated crash at step 7" in st.reason and "disk" not in st.reason, st.reason
    tail = make_panel(poll=False).outcome.stderr_tail.value  # the panel's "stderr (last lines)"
    assert "simulated crash at step 7" in tail and "No space left" not in tail and "step 5" not in tail, tail


def test_a_refused_resume_keeps_its_reason_next_to_the_button(small_mount, sim_env, make_config, panels):
    ws, remount = small_mount
    m = RunManager(ws)
    m.start(make_config(max_steps=LONG))
    wait_step(m, 2)
    m.stop(timeout=20)
    remount("ro")
    p = ControlPanel(ws, poll=False)
    panels.append(p)
    p.outcome.resume_button.click()
    assert p.wait_actions(30)
    p.refresh()  # the panel's next poll
    assert "not writable" in p.outcome.message.value and "Stopped" in p.outcome.banner.value
    p.refresh()
    assert "not writable" in p.outcome.message.value, "a later poll keeps the answer"
