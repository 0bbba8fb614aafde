"""Run lifecycle with real processes and real signals, on the simulated trainer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import psutil
import pytest

from gemma_ft_widgets import contract, remedies
from gemma_ft_widgets.config import ConfigError
from gemma_ft_widgets.runs import Code, Remedy, RunError, RunManager, State, identity, lockfile
from gemma_ft_widgets.train.simulated import CHILD_PID_FILE
from gemma_ft_widgets.ui import fmt

from .conftest import SIM_TRAINER, verified_processes, wait_for, wait_state, wait_step

LONG = 100_000  # max_steps of a run that only ends when stopped


def steps_of(events):
    return [e["step"] for e in events if e.get("event") == "step"]


def assert_group_gone(pgid: int):
    assert not identity.group_alive(pgid), f"process group {pgid} still has members"


def child_pid(run_dir: str) -> int:
    path = os.path.join(run_dir, CHILD_PID_FILE)
    return int(wait_for(lambda: os.path.exists(path) and open(path).read().strip(), what="sim child pid"))


# -- start, attach, finish ----------------------------------------------------------------
def test_run_outlives_the_process_that_started_it(workspace, make_config):
    """A process starts a run and exits; a new process attaches and sees the whole history."""
    code = ("import json, sys\nfrom gemma_ft_widgets.runs import RunManager\n"
            f"run = RunManager({workspace!r}).start(json.loads(sys.argv[1]))\n"
            "print(run.run_dir, run.status().state.value)\n")
    cfg = make_config(max_steps=60, checkpoint_every=20)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    run_dir, state = out.stdout.split()
    assert state in ("STARTING", "RUNNING")

    m = RunManager(workspace)  # a fresh "kernel"
    st = wait_state(m, State.RUNNING)
    assert st.run_dir == run_dir and st.active and st.max_steps == 60 and st.model == "tiny"
    events, offset = m.metrics(run_dir)
    assert steps_of(events)[0] == 1 and steps_of(events) == list(range(1, len(steps_of(events)) + 1))

    st = wait_state(m, State.FINISHED)
    assert (st.step, st.exit_code, st.reason, st.last_checkpoint) == (60, 0, "finished", "checkpoints/step_60")
    assert not st.active and not st.can_resume and st.ended_at and st.elapsed_s > 0
    assert not lockfile.read_lock(workspace).present
    more, _ = m.metrics(run_dir, since=offset)
    assert steps_of(more)[0] == steps_of(events)[-1] + 1 and steps_of(more)[-1] == 60
    result = json.load(open(os.path.join(run_dir, contract.RESULT_NAME)))
    assert result["state"] == "FINISHED" and result["final_step"] == 60 and result["attempt"] == 1
    log = open(os.path.join(run_dir, contract.STATUS_LOG_NAME)).read()
    assert "STARTING" in log and "FINISHED" in log


def test_killing_the_starters_process_group_does_not_touch_the_run(workspace, make_config):
    """Like a kernel restart: Jupyter kills the kernel's process group; training goes on."""
    code = ("import json, sys, time\nfrom gemma_ft_widgets.runs import RunManager\n"
            f"run = RunManager({workspace!r}).start(json.loads(sys.argv[1]))\n"
            "print(run.run_dir, flush=True)\ntime.sleep(600)\n")
    kernel = subprocess.Popen([sys.executable, "-c", code, json.dumps(make_config(max_steps=LONG))],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    run_dir = kernel.stdout.readline().strip()
    m = RunManager(workspace)
    wait_step(m, 2)
    os.killpg(kernel.pid, signal.SIGKILL)
    kernel.wait(timeout=10)
    before = m.status().step
    st = wait_step(m, before + 5)
    assert st.state == State.RUNNING and st.run_dir == run_dir and st.active


def test_lock_records_identities_and_process_model(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=LONG))
    wait_state(manager, State.RUNNING)
    lock = lockfile.read_lock(workspace).data
    sup, tr = lock["supervisor_pid"], lock["trainer_pid"]
    assert lock["pgid"] == sup == os.getpgid(tr) == os.getsid(tr) != os.getpgid(0)
    assert set(lock["create_times"]) == {str(sup), str(tr)}
    assert lock["cmdline"] == psutil.Process(sup).cmdline() and lock["trainer_cmdline"][-1] == run.run_dir
    assert lock["hostname"] == socket.gethostname() and lock["boot_id"] == identity.boot_id()
    assert lock["attempt"] == 1 and lock["started_at"] and lock["run_dir"] == run.run_dir
    assert os.stat(lockfile.lock_path(workspace)).st_mode & 0o777 == 0o644
    assert psutil.Process(tr).ppid() == sup


def test_second_start_is_refused_naming_the_active_run(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=LONG))
    with pytest.raises(RunError) as e:
        RunManager(workspace).start(make_config())
    assert run.name in str(e.value) and e.value.code == Code.ACTIVE and e.value.remedies == (Remedy.STOP,)
    # The lifecycle names no command or button; each front end words the remedy itself.
    assert "gemma-ft" not in str(e.value) and "Abort" not in str(e.value)
    assert f"`gemma-ft stop --workspace {workspace}`" in remedies.error_text(e.value)
    assert "stop it with Abort on its dashboard" in fmt.run_error(e.value)
    assert len(manager.runs()) == 1


def test_invalid_config_creates_nothing(tmp_path, sim_env, make_config):
    ws = tmp_path / "new-ws"
    with pytest.raises(ConfigError) as e:
        RunManager(str(ws)).start(make_config(max_steps=0, learning_rate=-1))
    assert {err.field for err in e.value.errors} >= {"max_steps", "learning_rate"}
    assert not ws.exists()


# -- stopping ------------------------------------------------------------------------------
def test_graceful_stop_saves_a_checkpoint_and_ends_aborted(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=LONG))
    wait_step(manager, 3)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    report = manager.stop(timeout=20)
    assert report.sent == [f"SIGINT to trainer (pid {report.sent[0].split('pid ')[1]}"]
    assert report.state == State.ABORTED and report.group_gone and not report.nothing_to_stop
    assert_group_gone(pgid)
    st = manager.status()
    assert st.state == State.ABORTED and st.exit_code == 3 and st.can_resume
    assert st.last_checkpoint == f"checkpoints/step_{st.step}"  # checkpoint of the very last step
    assert not lockfile.read_lock(workspace).present
    assert json.load(open(os.path.join(run.run_dir, contract.STOP_REQUEST_NAME)))["force"] is False
    again = manager.stop()
    assert again.nothing_to_stop and "nothing to stop" in again.message


def test_stop_escalates_to_sigterm_when_sigint_is_ignored(manager, make_config, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_IGNORE_SIGINT", "1")
    manager.start(make_config(max_steps=LONG))
    wait_step(manager, 2)
    report = manager.stop(timeout=0.5)
    assert [s.split(" ")[0] for s in report.sent] == ["SIGINT", "SIGTERM"]
    assert report.state == State.ABORTED and manager.status().exit_code == 3


def test_stop_kills_the_whole_group_of_a_hung_trainer(manager, make_config, sim_env, workspace):
    sim_env.setenv("GEMMA_FT_SIM_IGNORE_SIGINT", "1")
    sim_env.setenv("GEMMA_FT_SIM_HANG", "2")
    sim_env.setenv("GEMMA_FT_SIM_SPAWN_CHILD", "1")
    run = manager.start(make_config(max_steps=LONG))
    grandchild = psutil.Process(child_pid(run.run_dir))
    wait_step(manager, 2)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    report = manager.stop(timeout=0.3, term_timeout=0.3)
    assert [s.split(" ")[0] for s in report.sent] == ["SIGINT", "SIGTERM", "SIGKILL"]
    assert f"process group {pgid}" in report.sent[-1] and report.group_gone
    assert_group_gone(pgid)
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    st = manager.status()
    assert st.state == State.ABORTED and "force-stopped" in st.reason and st.signal_name == "SIGKILL"
    assert not lockfile.read_lock(workspace).present


def test_force_stop_goes_straight_to_the_group_kill(manager, make_config, sim_env, workspace):
    sim_env.setenv("GEMMA_FT_SIM_SPAWN_CHILD", "1")
    run = manager.start(make_config(max_steps=LONG))
    grandchild = psutil.Process(child_pid(run.run_dir))
    wait_step(manager, 1)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    report = manager.stop(force=True)
    assert report.sent == [f"SIGKILL to process group {pgid}"] and report.seconds < 10
    assert_group_gone(pgid)
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    assert manager.status().state == State.ABORTED


def test_graceful_stop_also_ends_leftover_children(manager, make_config, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_SPAWN_CHILD", "1")
    run = manager.start(make_config(max_steps=LONG))
    grandchild = psutil.Process(child_pid(run.run_dir))
    wait_step(manager, 2)
    report = manager.stop(timeout=20)
    assert report.sent[0].startswith("SIGINT") and "leftover" in report.sent[-1]
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    assert report.state == State.ABORTED


def test_stop_from_two_threads_at_once(manager, make_config):
    manager.start(make_config(max_steps=LONG))
    wait_step(manager, 1)
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(manager.stop(timeout=20))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.nothing_to_stop for r in reports) == [False, True]
    assert manager.status().state == State.ABORTED


def test_force_stop_does_not_wait_for_a_graceful_stop_in_progress(manager, make_config, sim_env, workspace):
    sim_env.setenv("GEMMA_FT_SIM_IGNORE_SIGINT", "1")
    sim_env.setenv("GEMMA_FT_SIM_HANG", "1")
    manager.start(make_config(max_steps=LONG))
    wait_step(manager, 1)
    graceful = []
    t = threading.Thread(target=lambda: graceful.append(manager.stop(timeout=60, term_timeout=60)))
    t.start()
    wait_state(manager, State.STOPPING)
    forced = manager.stop(force=True)
    assert forced.sent and forced.sent[0].startswith("SIGKILL") and forced.seconds < 10
    t.join(20)
    assert not t.is_alive() and graceful[0].sent[0].startswith("SIGINT")
    assert manager.status().state == State.ABORTED


def test_stop_right_after_start(manager, make_config, workspace):
    manager.start(make_config(max_steps=LONG))
    report = manager.stop(timeout=20)
    assert not report.nothing_to_stop and report.group_gone
    st = manager.status()
    assert st.state == State.ABORTED and not st.active, st.reason


def test_stop_with_nothing_running(manager, make_config):
    assert manager.stop().nothing_to_stop  # empty workspace
    manager.start(make_config(max_steps=5))
    wait_state(manager, State.FINISHED)
    report = manager.stop()
    assert report.nothing_to_stop and report.state == State.FINISHED


# -- how runs end --------------------------------------------------------------------------
def test_sigkill_of_the_trainer_alone_is_failed_with_the_signal_named(manager, make_config, workspace):
    manager.start(make_config(max_steps=LONG))
    wait_step(manager, 2)
    verified_processes(workspace)["trainer"].send_signal(signal.SIGKILL)
    st = wait_state(manager, State.FAILED)
    assert st.signal_name == "SIGKILL" and "likely out of memory" in st.reason and st.exit_code is None
    assert st.can_resume == bool(st.checkpoints)
    assert not lockfile.read_lock(workspace).present


def test_trainer_crash_is_failed_with_stderr(manager, make_config, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "4")
    run = manager.start(make_config(max_steps=LONG))
    st = wait_state(manager, State.FAILED)
    assert st.exit_code == 1 and "RuntimeError: simulated crash at step 4" in st.reason
    assert "Traceback" in manager.logs(run, "stderr")
    assert not st.can_resume  # no checkpoint yet


def test_config_error_exit_is_failed_invalid_config(manager, make_config, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_CONFIG_ERROR", "1")
    manager.start(make_config())
    st = wait_state(manager, State.FAILED)
    assert st.exit_code == 2 and st.reason.startswith("invalid config or data") and "simulated config error" in st.reason


def test_group_kill_gives_orphaned_then_resume_continues_past_the_checkpoint(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=60, checkpoint_every=5))
    wait_step(manager, 12)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    os.killpg(pgid, signal.SIGKILL)  # e.g. a container restart: nobody writes a result
    wait_for(lambda: not identity.group_alive(pgid), what="group gone")
    st = wait_state(manager, State.ORPHANED)
    assert "gone" in st.reason and st.can_resume and not st.active
    ckpt = st.checkpoints[-1]
    assert ckpt >= 10

    resumed = manager.resume()
    assert resumed.run_dir == run.run_dir
    st = wait_state(manager, State.FINISHED, timeout=60)
    assert st.attempt == 2 and st.step == 60
    events, _ = manager.metrics(run)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["attempt"] for s in starts] == [1, 2] and starts[1]["resume_step"] == ckpt
    second = steps_of(events[events.index(starts[1]):])
    assert second[0] == ckpt + 1 and second[-1] == 60
    assert steps_of(events)[:12] == list(range(1, 13)), "the first attempt's history is kept"


def test_a_resumed_run_is_starting_until_its_own_trainer_steps(manager, make_config, workspace, sim_env):
    """The first attempt's steps are in metrics.jsonl: they must not make attempt 2 look
    RUNNING while its trainer is still loading (CI once saw RUNNING with no trainer yet)."""
    manager.start(make_config(max_steps=LONG, checkpoint_every=2))
    wait_step(manager, 4)
    pgid = lockfile.read_lock(workspace).data["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    wait_state(manager, State.ORPHANED)
    sim_env.setenv("GEMMA_FT_SIM_LOAD_TIME", "1.5")
    manager.resume()
    seen = []
    while not seen or seen[-1] != State.RUNNING:
        st = manager.status()
        seen.append(st.state)
        assert st.state in (State.STARTING, State.RUNNING), st
        if st.state == State.RUNNING:
            events, _ = manager.metrics(st.run_dir)
            assert [e["attempt"] for e in events if e["event"] == "start"] == [1, 2]
            assert events[-1]["event"] != "start", "RUNNING before attempt 2 took a step"
    assert seen.count(State.STARTING) > 1 and st.attempt == 2
    manager.stop(force=True)


def test_resume_after_abort_sets_the_old_result_aside(manager, make_config):
    run = manager.start(make_config(max_steps=LONG))
    wait_step(manager, 3)
    manager.stop(timeout=20)
    aborted_at = manager.status().step
    manager.resume(run.name)
    st = wait_step(manager, aborted_at + 2)
    assert st.state == State.RUNNING and st.attempt == 2
    old = json.load(open(os.path.join(run.run_dir, "result.attempt-1.json")))
    assert old["state"] == "ABORTED" and old["attempt"] == 1
    manager.stop(timeout=20)
    assert manager.status().attempt == 2


def test_resume_is_refused_when_nothing_can_be_resumed(manager, make_config):
    with pytest.raises(RunError, match="nothing to resume"):
        manager.resume()
    manager.start(make_config(max_steps=LONG))
    with pytest.raises(RunError, match="active"):
        manager.resume()
    manager.stop(force=True)
    manager.resume()  # ABORTED: allowed
    manager.stop(timeout=20)
    finished = manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    with pytest.raises(RunError, match="FINISHED"):
        manager.resume(finished)


# -- locks that are not what they claim ----------------------------------------------------
def forge_lock(workspace: str, run_dir: str, pid: int, **overrides) -> None:
    p = psutil.Process(pid)
    os.makedirs(run_dir, exist_ok=True)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), {"model": "tiny", "max_steps": 50})
    data = {"run_dir": run_dir, "supervisor_pid": pid, "trainer_pid": pid, "pgid": os.getpgid(pid),
            "create_times": {str(pid): p.create_time()}, "cmdline": p.cmdline(), "trainer_cmdline": p.cmdline(),
            "hostname": socket.gethostname(), "boot_id": identity.boot_id(), "started_at": contract.utc_now(),
            "attempt": 1, **overrides}
    with lockfile.guard(workspace):
        assert lockfile.create_lock(workspace, data)


def assert_never_signalled(proc):
    assert proc.poll() is None, "the foreign process was killed"
    assert not proc.signals_log.exists(), f"the foreign process got signals: {proc.signals_log.read_text()}"


@pytest.mark.parametrize("forgery", ["reused_pid", "other_cmdline"])
def test_forged_lock_naming_a_live_foreign_process(manager, make_config, workspace, signal_recorder, forgery):
    run_dir = os.path.join(workspace, "forged-run")
    pid = signal_recorder.pid
    ct = psutil.Process(pid).create_time()
    forge_lock(workspace, run_dir, pid, **({"create_times": {str(pid): ct - 1000}} if forgery == "reused_pid"
                                           else {"cmdline": ["python", "train.py"], "trainer_cmdline": ["x"]}))
    st = manager.status()
    assert st.state == State.ORPHANED and "belongs to another program" in st.reason and not st.active
    assert manager.stop(force=True).nothing_to_stop
    assert manager.stop().nothing_to_stop
    run = manager.start(make_config(max_steps=3))  # the stale lock is cleared, not waited on
    wait_state(manager, State.FINISHED)
    assert "lock cleared by a new start" in open(os.path.join(run_dir, contract.STATUS_LOG_NAME)).read()
    assert {r.run_name: r.state for r in manager.runs()} == {"forged-run": State.ORPHANED, run.name: State.FINISHED}
    assert_never_signalled(signal_recorder)


def test_lock_from_before_a_reboot_is_orphaned_and_never_signalled(manager, make_config, workspace, signal_recorder):
    run_dir = os.path.join(workspace, "before-reboot")
    forge_lock(workspace, run_dir, signal_recorder.pid, boot_id="an-earlier-boot")  # identity matches!
    st = manager.status()
    assert st.state == State.ORPHANED and "rebooted" in st.reason and st.can_resume
    assert manager.stop(force=True).nothing_to_stop
    manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    assert manager.status("before-reboot").state == State.ORPHANED
    assert_never_signalled(signal_recorder)


def test_lock_from_another_host_is_reported_never_killed_nor_declared_dead(
        manager, make_config, workspace, signal_recorder):
    run_dir = os.path.join(workspace, "elsewhere-run")
    forge_lock(workspace, run_dir, signal_recorder.pid, hostname="other-host.example", boot_id="x")
    contract.append_jsonl(os.path.join(run_dir, contract.METRICS_NAME), {"event": "step", "step": 7, "loss": 1.0})
    st = manager.status()
    assert st.state == State.RUNNING and st.foreign_host == "other-host.example" and st.active
    assert "cannot be verified or stopped from here" in st.reason and st.step == 7 and not st.can_resume
    with pytest.raises(RunError, match="other-host.example"):
        manager.start(make_config())
    with pytest.raises(RunError, match="other-host.example"):
        manager.stop(force=True)
    with pytest.raises(RunError) as refused:
        manager.clean()
    assert refused.value.code == Code.FOREIGN and "gemma-ft clean --force" in remedies.error_text(refused.value)
    with pytest.raises(RunError):
        manager.resume("elsewhere-run")
    assert_never_signalled(signal_recorder)
    assert "cleared" in manager.clean(force=True)
    assert manager.status().state == State.ORPHANED and os.path.isdir(run_dir)
    assert_never_signalled(signal_recorder)


def test_eight_simultaneous_starts_give_exactly_one_run(workspace, make_config, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(make_config(max_steps=LONG)))
    go = tmp_path / "go"
    code = ("import os, sys, time\nfrom gemma_ft_widgets import cli\n"
            "open(sys.argv[1], 'w').close()\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            f"sys.exit(cli.main(['start', {str(cfg)!r}, '--workspace', {workspace!r}]))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"ready{i}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    wait_for(lambda: all((tmp_path / f"ready{i}").exists() for i in range(8)), timeout=60, what="8 ready")
    go.touch()
    outs = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    winners = [o for o in outs if o[2] == 0]
    losers = [o for o in outs if o[2] != 0]
    assert len(winners) == 1, outs
    run_dir = winners[0][0].strip()
    assert all("already active" in err and os.path.basename(run_dir) in err for _, err, _ in losers), losers
    m = RunManager(workspace)
    assert [r.run_dir for r in m.runs()] == [run_dir]
    assert m.status().state in (State.STARTING, State.RUNNING)


# -- corrupt files -------------------------------------------------------------------------
def test_corrupt_lock_is_orphaned_and_does_not_block_a_start(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    os.remove(os.path.join(run.run_dir, contract.RESULT_NAME))  # as if it never ended
    with open(lockfile.lock_path(workspace), "w") as f:
        f.write('{"run_dir": "/truncated')
    st = manager.status()
    assert st.state == State.ORPHANED and "lock file unreadable" in st.reason and st.run_dir == run.run_dir
    assert manager.stop().nothing_to_stop
    manager.runs()
    second = manager.start(make_config(max_steps=3))
    assert wait_state(manager, State.FINISHED).run_dir == second.run_dir


def test_corrupt_lock_in_an_empty_workspace(manager, workspace):
    with open(lockfile.lock_path(workspace), "wb") as f:
        f.write(b"\xff\x00garbage")
    st = manager.status()
    assert st.state == State.ORPHANED and "lock file unreadable" in st.reason
    assert "unreadable" in manager.clean()
    assert manager.status().state == State.IDLE


def test_corrupt_result_is_failed_with_a_reason(manager, make_config):
    run = manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED)
    with open(os.path.join(run.run_dir, contract.RESULT_NAME), "w") as f:
        f.write('{"state": "FINI')
    st = manager.status()
    assert st.state == State.FAILED and "result file unreadable" in st.reason
    with open(os.path.join(run.run_dir, contract.RESULT_NAME), "w") as f:
        f.write('{"state": "EXPLODED"}')
    assert manager.runs()[0].state == State.FAILED


def test_corrupt_metrics_never_crash_a_reader(manager, make_config):
    run = manager.start(make_config(max_steps=5))
    wait_state(manager, State.FINISHED)
    path = os.path.join(run.run_dir, contract.METRICS_NAME)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b'garbage\n\xff\xfe\x00\n[1,2]\n{"event":"step","step":99,"lo')  # last line incomplete
    st = RunManager(manager.workspace).status()
    assert st.state == State.FINISHED and st.step == 5 and st.corrupt_metric_lines == 3
    events, offset = manager.metrics(run, since=size)
    assert events == [] and offset < os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b'ss":0.1}\n')
    events, _ = manager.metrics(run, since=offset)
    assert steps_of(events) == [99]


def test_status_refresh_reads_only_appended_bytes(manager, make_config):
    run = manager.start(make_config(max_steps=LONG))
    first = wait_step(manager, 3)
    second = wait_step(manager, first.step + 3)
    assert second.metrics_offset > first.metrics_offset
    manager.stop(timeout=20)
    for _ in range(5):
        manager.status()
    summary = manager.statuses._summaries[run.run_dir]
    path = os.path.join(run.run_dir, contract.METRICS_NAME)
    # Each event was parsed exactly once over all the refreshes: no refresh re-read the file.
    assert summary.events == len(contract.read_jsonl(path))
    assert summary.reader.offset == os.path.getsize(path)


# -- clean and delete ----------------------------------------------------------------------
def test_clean_clears_an_orphans_lock_and_keeps_every_file(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=LONG, checkpoint_every=2))
    wait_step(manager, 4)
    with pytest.raises(RunError, match="active"):
        manager.clean()
    pgid = lockfile.read_lock(workspace).data["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    wait_state(manager, State.ORPHANED)
    before = sorted(os.listdir(run.run_dir))
    assert "cleared" in manager.clean()
    assert sorted(os.listdir(run.run_dir)) == before and manager.status().checkpoints
    st = manager.status()
    assert st.state == State.ORPHANED and "no result and no lock" in st.reason and st.can_resume
    with pytest.raises(RunError, match="nothing to clean"):
        manager.clean()


def test_delete_is_explicit_and_refused_while_active(manager, make_config, workspace):
    with pytest.raises(RunError, match="unknown run"):
        manager.delete("nope")
    with pytest.raises(RunError, match="unknown run"):
        manager.delete("../" + os.path.basename(workspace))
    run = manager.start(make_config(max_steps=LONG))
    with pytest.raises(RunError, match="active"):
        manager.delete(run.name)
    manager.stop(force=True)
    assert os.path.isdir(run.run_dir)
    manager.delete(run.name)
    assert not os.path.exists(run.run_dir)
    assert manager.status().state == State.IDLE


def test_trainer_module_from_environment(workspace, make_config, sim_env):
    sim_env.setenv(contract.TRAINER_ENV, SIM_TRAINER)
    m = RunManager(workspace)
    assert m.trainer == SIM_TRAINER
    sim_env.delenv(contract.TRAINER_ENV)
    assert RunManager(workspace).trainer == contract.DEFAULT_TRAINER


def test_sample_and_export_failures_carry_stderr(manager, workspace):
    run_dir = os.path.join(workspace, "broken-run")
    os.makedirs(run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), {"max_steps": "many"})
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(RunError, match="sampling failed") as e:
        manager.sample("broken-run", "Hello", max_new_tokens=4, timeout=120)
    assert "max_steps" in str(e.value)
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("gemma-ft-sample-")}
    with pytest.raises(RunError, match="export failed"):
        manager.export("broken-run", os.path.join(workspace, "out"), timeout=120)
    with pytest.raises(RunError, match="unknown run"):
        manager.sample("nope", "Hello")


def test_a_sampler_past_its_timeout_is_stopped_and_leaves_nothing(manager, make_config):
    run = manager.start(make_config(max_steps=6, checkpoint_every=3))
    wait_state(manager, State.FINISHED)
    before = set(os.listdir(tempfile.gettempdir()))
    phases = []
    with pytest.raises(RunError, match="longer than 0.5 s"):  # loading jax alone takes longer
        manager.sample(run, "Hello", timeout=0.5, on_progress=phases.append)
    assert not [p for p in psutil.Process().children(recursive=True)
                if "gemma_ft_widgets.train.sample" in " ".join(p.cmdline())]
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("gemma-ft-sample-")}


def test_lock_whose_starter_died_before_launching_is_orphaned(manager, make_config, workspace):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    launcher = identity.describe(gone.pid)
    gone.wait()
    run_dir = os.path.join(workspace, "never-launched")
    os.makedirs(run_dir)
    data = {"run_dir": run_dir, "supervisor_pid": None, "trainer_pid": None, "hostname": socket.gethostname(),
            "boot_id": identity.boot_id(), "attempt": 1, "launcher": launcher}
    with lockfile.guard(workspace):
        lockfile.create_lock(workspace, data)
    st = manager.status()
    assert st.state == State.ORPHANED and "before launching the supervisor" in st.reason
    manager.start(make_config(max_steps=2))
    wait_state(manager, State.FINISHED)


def test_supervisor_without_its_lock_starts_no_trainer(workspace, tmp_path):
    run_dir = os.path.join(workspace, "no-lock")
    os.makedirs(run_dir)
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.runs.supervisor", run_dir, "--workspace",
                          workspace, "--trainer", SIM_TRAINER, "--attempt", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not starting the trainer" in out.stdout
    assert not os.path.exists(os.path.join(run_dir, contract.METRICS_NAME))


def test_a_lock_naming_a_folder_outside_the_workspace_is_never_resumed_there(manager, workspace, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with lockfile.guard(workspace):
        lockfile.create_lock(workspace, {"run_dir": str(outside), "hostname": socket.gethostname(),
                                         "boot_id": identity.boot_id(), "attempt": 1})
    assert manager.status().state == State.ORPHANED
    with pytest.raises(RunError, match="unknown run"):
        manager.resume()
    assert not (outside / contract.STATUS_LOG_NAME).exists()


def test_run_handle_stops_only_its_own_run(manager, make_config):
    first = manager.start(make_config(max_steps=2))
    wait_state(manager, State.FINISHED)
    second = manager.start(make_config(max_steps=LONG))
    assert first.stop().nothing_to_stop
    assert manager.status().active
    assert not second.stop(timeout=20).nothing_to_stop
    assert second.status().state == State.ABORTED


def test_wait_returns_at_the_wanted_state_and_refuses_unreachable_ones(tmp_path, monkeypatch):
    from gemma_ft_widgets.runs import RunError, RunManager, State

    monkeypatch.setenv("GEMMA_FT_SIM_STEP_TIME", "0.01")
    monkeypatch.setenv("GEMMA_FT_SIM_CRASH_AT", "5")
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join('{"prompt": "p%d", "response": "r"}\n' % i for i in range(10)))
    manager = RunManager(tmp_path / "ws", trainer="gemma_ft_widgets.train.simulated")
    run = manager.start({"dataset": str(dataset), "max_steps": 50, "warmup_steps": 0, "batch_size": 2})
    with pytest.raises(RunError, match="FAILED"):
        run.wait(until=lambda st: (st.step or 0) > 40, timeout=60)
    assert run.wait(timeout=30).state is State.FAILED
