"""Unit tests of the pure parts: derive_state's table, exit-status classification, lock and
metrics parsing."""

from __future__ import annotations

import json
import os

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import Facts, Proc, State, derive_state, lockfile
from gemma_ft_widgets.runs.metrics import MetricsSummary
from gemma_ft_widgets.runs.results import OOM_REASON, classify
from gemma_ft_widgets.runs.state import valid_result

HOST, BOOT = "here", "boot-1"
LOCK = {"run_dir": "/ws/run", "hostname": HOST, "boot_id": BOOT, "attempt": 1,
        "supervisor_pid": 10, "trainer_pid": 11}
ALIVE, GONE, REUSED, NONE = Proc.ALIVE, Proc.GONE, Proc.REUSED, Proc.NONE


def facts(**kw) -> Facts:
    return Facts(host=HOST, boot_id=BOOT, **kw)


def result(state: str, attempt: int = 1, reason: str = "why") -> dict:
    return {"state": state, "attempt": attempt, "reason": reason}


CASES = [
    # (id, facts, expected state, substring of the reason)
    ("no runs", Facts(has_run=False), State.IDLE, "no runs"),
    ("lock unreadable", facts(lock_error="not valid JSON"), State.ORPHANED, "lock file unreadable"),
    ("supervisor up, no trainer yet", facts(lock=LOCK, supervisor=ALIVE), State.STARTING, "supervisor"),
    ("trainer loading", facts(lock=LOCK, supervisor=ALIVE, trainer=ALIVE), State.STARTING, "loading"),
    ("stepping", facts(lock=LOCK, supervisor=ALIVE, trainer=ALIVE, stepped=True), State.RUNNING, ""),
    ("trainer alone alive", facts(lock=LOCK, supervisor=GONE, trainer=ALIVE, stepped=True), State.RUNNING, ""),
    ("stop requested", facts(lock=LOCK, supervisor=ALIVE, trainer=ALIVE, stepped=True, stop_requested=True),
     State.STOPPING, "stop requested"),
    ("launcher still launching", facts(lock=LOCK, launcher=ALIVE), State.STARTING, "launching"),
    ("launcher died before supervisor", facts(lock=LOCK, launcher=GONE), State.ORPHANED, "before launching"),
    ("both gone", facts(lock=LOCK, supervisor=GONE, trainer=GONE, pids={"supervisor": 10, "trainer": 11}),
     State.ORPHANED, "supervisor (pid 10) is gone"),
    ("pid reused", facts(lock=LOCK, supervisor=REUSED, trainer=GONE, pids={"supervisor": 10}),
     State.ORPHANED, "pid 10 now belongs to another program"),
    ("other boot", facts(lock={**LOCK, "boot_id": "boot-0"}, supervisor=ALIVE), State.ORPHANED, "rebooted"),
    ("other host, no step", facts(lock={**LOCK, "hostname": "far"}), State.STARTING, "active on host far"),
    ("other host, stepping", facts(lock={**LOCK, "hostname": "far"}, stepped=True), State.RUNNING, "cannot be verified"),
    ("other host, stop asked", facts(lock={**LOCK, "hostname": "far"}, stop_requested=True), State.STOPPING, "host far"),
    ("other host ended", facts(lock={**LOCK, "hostname": "far"}, result=result("FINISHED")), State.FINISHED, "why"),
    ("result written, supervisor exiting", facts(lock=LOCK, supervisor=ALIVE, result=result("ABORTED")),
     State.ABORTED, "why"),
    ("result written, supervisor died", facts(lock=LOCK, supervisor=GONE, trainer=GONE, result=result("FAILED")),
     State.FAILED, "why"),
    ("old attempt's result ignored", facts(lock={**LOCK, "attempt": 2}, supervisor=ALIVE, trainer=ALIVE,
                                           stepped=True, result=result("ABORTED", attempt=1)), State.RUNNING, ""),
    ("finished", facts(result=result("FINISHED", reason="finished")), State.FINISHED, "finished"),
    ("failed", facts(result=result("FAILED", reason=OOM_REASON)), State.FAILED, "out of memory"),
    ("aborted", facts(result=result("ABORTED")), State.ABORTED, "why"),
    ("result unreadable", facts(result_error="truncated"), State.FAILED, "result file unreadable"),
    ("no result, no lock", facts(), State.ORPHANED, "no result and no lock"),
]


@pytest.mark.parametrize("f, state, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_derive_state(f, state, reason):
    got, why = derive_state(f)
    assert got == state
    assert reason in why
    if got in (State.ORPHANED, State.FAILED, State.STOPPING):
        assert why, "states that need a reason carry one"


@pytest.mark.parametrize("code, stopped, state, fragment", [
    (0, False, "FINISHED", "finished"),
    (3, False, "ABORTED", "stopped on request"),
    (2, False, "FAILED", "invalid config or data: dataset: bad line 3"),
    (1, False, "FAILED", "exited with code 1: RuntimeError: boom"),
    (-9, False, "FAILED", "killed by SIGKILL, likely out of memory"),
    (-9, True, "ABORTED", "SIGKILL"),
    (-15, True, "ABORTED", "SIGTERM"),
    (-11, False, "FAILED", "killed by SIGSEGV"),
    (-2, True, "ABORTED", "SIGINT"),
])
def test_classify_exit_status(code, stopped, state, fragment):
    stderr = "Traceback...\nRuntimeError: boom" if code == 1 else ("dataset: bad line 3" if code == 2 else "")
    out = classify(code, stopped, stderr)
    assert out["state"] == state and fragment in out["reason"]
    if code < 0:
        assert out["signal"] == -code and out["signal_name"].startswith("SIG") and out["exit_code"] is None
    else:
        assert out["exit_code"] == code and out["signal"] is None


@pytest.mark.parametrize("obj, ok", [
    ({"state": "FINISHED"}, True), ({"state": "RUNNING"}, False), ([], False), ({}, False), ("x", False)])
def test_valid_result(obj, ok):
    assert (valid_result(obj) is None) == ok


@pytest.mark.parametrize("text, error", [
    ("", "empty"), ("{", "not valid JSON"), ("[1]", "not a JSON object"), ('{"pid": 1}', "no run_dir"),
    ('{"run_dir": "/x", "supervisor_pid": "12"}', "not an integer"), ("\x00\xff garbage", "not valid JSON"),
])
def test_corrupt_lock_reads_as_error_not_exception(tmp_path, text, error):
    (tmp_path / contract.LOCK_NAME).write_text(text, errors="surrogateescape")
    got = lockfile.read_lock(str(tmp_path))
    assert got.present and got.data is None and error in got.error


def test_lock_is_created_exclusively_and_not_world_writable(tmp_path):
    ws = str(tmp_path)
    with lockfile.guard(ws):
        assert lockfile.create_lock(ws, {"run_dir": "/x/a"})
        assert not lockfile.create_lock(ws, {"run_dir": "/x/b"})
    assert lockfile.read_lock(ws).data["run_dir"] == "/x/a"
    assert os.stat(lockfile.lock_path(ws)).st_mode & 0o022 == 0
    assert lockfile.update_lock(ws, lambda d: True, {"trainer_pid": 5})
    assert os.stat(lockfile.lock_path(ws)).st_mode & 0o022 == 0
    assert not lockfile.clear_lock_if(ws, lambda d: d["run_dir"] == "/x/b")
    assert lockfile.clear_lock_if(ws, lambda d: d["run_dir"] == "/x/a")
    assert not lockfile.read_lock(ws).present


def test_metrics_summary_counts_only_complete_lines(tmp_path):
    path = tmp_path / contract.METRICS_NAME
    s = MetricsSummary(str(tmp_path))
    assert s.refresh().last_step is None  # no file yet
    with open(path, "ab") as f:
        f.write(b'{"event":"start","max_steps":9}\n{"event":"step","step":1,"loss":2.0}\n{"event":"step","st')
    s.refresh()
    assert s.last_step["step"] == 1 and s.stepped and s.value("start", "max_steps") == 9
    offset = s.reader.offset
    with open(path, "ab") as f:
        f.write(b'ep":2,"loss":1.5}\nnot json\n\xff\xfe\n{"event":"start"}\n')
    s.refresh()
    assert s.last_step["step"] == 2 and s.reader.corrupt_lines == 2
    assert not s.stepped, "a new start resets 'stepped' until the next step"
    assert s.reader.offset > offset
    assert json.loads(path.read_bytes().splitlines()[1])["step"] == 1
