"""Reliability matrix, kernel scenarios (docs/lifecycle.md): a real IPython kernel (through
jupyter_client, tests/kernel.py) starts a run on the simulated trainer and is then restarted,
SIGKILLed, shut down, interrupted, disconnected from its client, or doubled by a second kernel.
The run lives in its own session and process group, so none of this reaches it."""

from __future__ import annotations

import json
import os
import queue
import signal
import textwrap
import time

import psutil
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State

from .conftest import wait_for, wait_step
from .kernel import Kernel
from .test_reliability import assert_whole_history, gone, lock_pids

pytestmark = pytest.mark.slow
LONG = 100_000

PANEL_SETUP = """
import json, time
from gemma_ft_widgets.ui import ControlPanel
panel = ControlPanel({ws!r}, poll=True, poll_interval=0.1)
assert panel.wait_ready(30), "first poll"
for k, v in dict(max_steps={max_steps}, warmup_steps=0, eval_every=1000, checkpoint_every=1000).items():
    panel.form.fields[k].value = v

def until(pred, timeout=30):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out in the kernel"
        time.sleep(0.02)
"""

PANEL_REPORT = """
print(json.dumps({"state": panel.state, "view": panel.view, "run_dir": panel.run_dir, "polling": panel.polling,
                  "errors": panel.poll_errors, "x": [int(x) for x in panel.dashboard.loss_line.x],
                  "messages": panel.messages}))
"""


def report(kernel: Kernel) -> dict:
    return json.loads(kernel.execute(PANEL_REPORT)["stdout"].strip().splitlines()[-1])


def finish(kernel: Kernel, msg_id: str, timeout: float = 60) -> dict:
    """Collect the outcome of a request sent with kernel.kc.execute (like Kernel.execute)."""
    out = {"stdout": "", "error": None}
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no answer from the kernel in {timeout}s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out["stdout"] += content["text"]
        elif kind == "error":
            out["error"] = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            return out


@pytest.fixture
def kernels(tmp_path, sim_env):
    """Start kernels on demand (the simulated trainer's env is inherited); shut all down."""
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.03")
    started: list[Kernel] = []

    def start() -> Kernel:
        k = Kernel(str(tmp_path)).start()
        started.append(k)
        return k

    yield start
    for k in started:
        try:
            k.shutdown()
        except Exception:  # noqa: BLE001 - a kernel the test killed on purpose
            pass


def assert_alive(pids: dict[int, float]) -> None:
    dead = [pid for pid, t in pids.items() if gone(pid, t)]
    assert not dead, f"processes of the run died: {dead}"


def panel_shows_whole_history(kernel: Kernel, workspace: str, run_dir: str, logged_before: int) -> dict:
    """A panel built in `kernel` shows the run RUNNING with every step from 1 on."""
    out = kernel.execute(textwrap.dedent(f"""
        import json
        from gemma_ft_widgets.ui import ControlPanel
        panel = ControlPanel({workspace!r}, poll=False)   # builds and polls once
        x = [int(v) for v in panel.dashboard.loss_line.x]
        events, _ = panel.manager.metrics(panel.run_dir)
        logged = sum(1 for e in events if e.get("event") == "step")
        print(json.dumps({{"state": panel.state, "run_dir": panel.run_dir, "x": x, "logged": logged}}))
        panel.close()
    """))
    got = json.loads(out["stdout"].strip().splitlines()[-1])
    assert got["state"] == "RUNNING" and got["run_dir"] == run_dir
    assert_whole_history(got["x"], logged_before)
    assert got["x"][-1] <= got["logged"]
    return got


# -- 7, 8, 12 (kernel) ---------------------------------------------------------------------
def test_kernel_restart_sigkill_and_shutdown_never_touch_the_run(kernels, workspace):
    """Scenarios 7 (kernel restart), 12 (kernel SIGKILL) and 8 (notebook closed and its kernel
    shut down, then reopened with a new kernel): the run keeps its processes and its pace,
    and a panel in the new kernel shows it RUNNING with its whole history."""
    k = kernels()
    out = k.execute(textwrap.dedent(f"""
        from gemma_ft_widgets.runs import RunManager
        from gemma_ft_widgets.config import sample_dataset_path
        m = RunManager({workspace!r})
        run = m.start({{"dataset": sample_dataset_path(), "max_steps": {LONG}, "warmup_steps": 0,
                        "checkpoint_every": 1000, "eval_every": 1000}})
        m.wait(until="RUNNING", timeout=60)
        print(run.run_dir)
    """))
    run_dir = out["stdout"].strip().splitlines()[-1]
    pids = lock_pids(workspace)
    m = RunManager(workspace)
    lock = json.load(open(os.path.join(workspace, contract.LOCK_NAME)))
    sup = psutil.Process(lock["supervisor_pid"])
    assert sup.ppid() == k.pid and os.getsid(sup.pid) != os.getsid(k.pid)  # the kernel's child, own session

    for how in ("restart", "sigkill", "shutdown_and_reopen"):
        old_pid = k.pid
        kernel_ctime = psutil.Process(old_pid).create_time()
        logged = m.status().step
        if how == "restart":
            k.restart()  # jupyter_client kills the kernel's process group
        elif how == "sigkill":
            os.kill(k.pid, signal.SIGKILL)
            wait_for(lambda: gone(old_pid, kernel_ctime), 10, what="kernel gone")
            k.restart()
        else:
            k.shutdown()
            k = kernels()
        assert k.pid != old_pid
        st = wait_step(m, logged + 10)
        assert st.state == State.RUNNING and st.run_dir == run_dir, how
        assert_alive(pids)
        assert not os.path.exists(os.path.join(run_dir, contract.STOP_REQUEST_NAME))
        panel_shows_whole_history(k, workspace, run_dir, logged)
    events, _ = m.metrics(run_dir)
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and len([e for e in events if e["event"] == "start"]) == 1


# -- 16 ------------------------------------------------------------------------------------
def test_kernel_interrupt_while_the_panel_polls_leaves_training_and_the_poller_alone(kernels, workspace):
    """Scenario 16: the stop button (SIGINT to the kernel's process group) during a busy cell,
    and during a cell that waits on the run, interrupts only that cell."""
    k = kernels()
    k.execute(PANEL_SETUP.format(ws=workspace, max_steps=LONG))
    k.execute("panel.form.start_button.click(); assert panel.wait_actions(30); "
              "until(lambda: panel.state == 'RUNNING')")
    pids = lock_pids(workspace)
    m = RunManager(workspace)
    for cell in ("time.sleep(60)", "panel.manager.wait()"):  # busy; blocked on the run
        before = report(k)
        msg_id = k.kc.execute(cell)
        time.sleep(1.0)
        t0 = time.monotonic()
        k.interrupt()
        assert finish(k, msg_id, 30)["error"] == "KeyboardInterrupt", cell
        assert time.monotonic() - t0 < 10
        after = report(k)
        assert after["polling"] and after["errors"] == 0 and after["state"] == "RUNNING", after
        assert after["x"][-1] > before["x"][-1]  # the poller went on while the cell was busy
        time.sleep(0.5)
        assert report(k)["x"][-1] > after["x"][-1]  # and still goes on
        assert_alive(pids)
        st = m.status()
        assert st.state == State.RUNNING and not st.stop_requested
    assert k.eval("panel._poller._thread.is_alive()") is True


# -- 10 ------------------------------------------------------------------------------------
def test_losing_every_client_connection_does_not_stop_the_poller_or_the_run(kernels, workspace):
    """Scenario 10 at the kernel: the browser (here, the only client) disconnects for a few
    seconds; the panel's thread keeps reading the files, and once a client is back the panel
    is current, with no gap. Training never depended on the connection."""
    k = kernels()
    k.execute(PANEL_SETUP.format(ws=workspace, max_steps=LONG))
    k.execute("panel.form.start_button.click(); assert panel.wait_actions(30); "
              "until(lambda: panel.state == 'RUNNING')")
    pids = lock_pids(workspace)
    m = RunManager(workspace)
    before = report(k)
    k.kc.stop_channels()  # the connection is gone (the kernel cannot even tell)
    time.sleep(3)
    logged = m.status().step
    k._connect(60)  # a client is back (the page reconnects)
    k.execute(f"until(lambda: len(panel.dashboard.loss_line.x) and panel.dashboard.loss_line.x[-1] >= {logged}, 15)")
    after = report(k)
    assert after["polling"] and after["errors"] == 0 and after["state"] == "RUNNING"
    assert logged > before["x"][-1] + 20  # steps went on while nobody was connected
    assert_whole_history(after["x"], logged)
    assert_alive(pids)


# -- 9 -------------------------------------------------------------------------------------
def test_two_kernels_pressing_start_together_make_one_run_and_agree(kernels, workspace):
    """Scenario 9 with two notebooks (two kernels, two processes): both press Start at the
    same moment; one run starts, the other panel says why not; both then show the same run,
    and an abort in one is seen by the other."""
    a, b = kernels(), kernels()
    for k in (a, b):
        k.execute(PANEL_SETUP.format(ws=workspace, max_steps=LONG))
    # The panel that loses says why: the manager refused it ("Not started: a run is already
    # active"), or, when its poller saw the other run first, Start was already disabled and
    # its note names the run (as CI once met: that kernel ran its cell a poll later).
    click = ("panel.form.start_button.click(); assert panel.wait_actions(30); "
             "print(panel.form.message.value, '|', panel.form.blocked_note.value)")
    ids = [(k, k.kc.execute(click)) for k in (a, b)]  # both in flight at once
    outcomes = [finish(k, msg_id) for k, msg_id in ids]
    messages = [out["stdout"] for out in outcomes]
    assert sum("Started" in msg for msg in messages) == 1, outcomes
    refused = [msg for msg in messages if "Not started" in msg or "Start is disabled" in msg]
    assert len(refused) == 1, outcomes
    assert "already active" in refused[0] or "Start is disabled" in refused[0], outcomes
    runs = [n for n in os.listdir(workspace) if not n.startswith(".") and n != "uploads"]
    assert len(runs) == 1
    for k in (a, b):
        k.execute("until(lambda: panel.state == 'RUNNING')")
    ra, rb = report(a), report(b)
    assert ra["run_dir"] == rb["run_dir"] == os.path.join(workspace, runs[0])
    b.execute("panel.dashboard.abort_button.click(); panel.dashboard.confirm_button.click(); "
              "assert panel.wait_actions(60)")
    for k in (a, b):
        k.execute("until(lambda: panel.state == 'ABORTED')")
    assert report(a)["view"] == "finished"
    assert RunManager(workspace).status().state == State.ABORTED

