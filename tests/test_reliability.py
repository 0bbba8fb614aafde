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
    assert list(p.dashboard.loss_line.x)[:logged] == list(range(1, logged + 1))
    assert p.poll_errors == 0
    p.manager.stop(force=True)


# -- 10: the browser connection drops; the kernel-side poller goes on ---------------------
def test_panel_keeps_polling_through_transient_read_errors_and_catches_up(make_panel, sim_env, monkeypatch, workspace):
    """Scenario 10: the poller reads files, not the browser connection. Transient read
    failures (a network file system hiccup) are reported, polling goes on, nothing is lost
    and the training process never notices."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.02")
    p = make_panel(poll=True, poll_interval=0.05)
    assert p.wait_ready(10)
    p.manager.start(make_config_for(p, max_steps=LONG))
    wait_for(lambda: p.state == "RUNNING" and len(p.dashboard.loss_line.x) >= 5, 30, what="points")
    pids = lock_pids(workspace)
    real = p.manager.metrics
    broken = threading.Event()
    broken.set()

    def flaky(*a, **k):
        if broken.is_set():
            raise OSError(5, "Input/output error")
        return real(*a, **k)

    monkeypatch.setattr(p.manager, "metrics", flaky)
    wait_for(lambda: p.poll_errors >= 5, 10, what="failed polls")
    stuck = len(p.dashboard.loss_line.x)
    wait_step(RunManager(workspace), stuck + 20)
    broken.clear()  # the connection is back
    assert p.polling
    logged = RunManager(workspace).status().step
    wait_for(lambda: len(p.dashboard.loss_line.x) >= logged, 10, what="caught up")
    assert list(p.dashboard.loss_line.x)[:logged] == list(range(1, logged + 1))  # no gap
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
