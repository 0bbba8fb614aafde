"""Reliability matrix, the Jupyter server (docs/lifecycle.md, scenarios 11 and 12): a real
`jupyter lab` (tests/browser/lab.py, no browser needed) whose kernel starts a run from the
panel; the server is stopped with Ctrl+C, then another one is SIGKILLed; the run goes on, and
each next server's kernel re-attaches to it with its whole history. The browser side of the
same story is tests/browser/test_lab_server_kill.py."""

from __future__ import annotations

import json
import os
import textwrap

import psutil
import pytest
from jupyter_client import BlockingKernelClient

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State

from .browser.lab import LabServer
from .conftest import SIM_TRAINER, wait_for, wait_step
from .test_reliability import assert_whole_history, gone, lock_pids

pytestmark = pytest.mark.slow


class ServerKernel:
    """A kernel started through the server's REST API, driven with its connection file."""

    def __init__(self, server: LabServer):
        self.server = server
        self.id = server.api("POST", "/api/kernels", {"name": "python3"})["id"]
        path = os.path.join(server.env["JUPYTER_RUNTIME_DIR"], f"kernel-{self.id}.json")
        wait_for(lambda: os.path.exists(path), 30, what="the kernel's connection file")
        self.kc = BlockingKernelClient(connection_file=path)
        self.kc.load_connection_file()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.pid = int(self.run("import os; print(os.getpid())").strip())

    def run(self, code: str, timeout: float = 120) -> str:
        out, errors = [], []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        assert not errors, errors[0]
        return "".join(out)

    def close(self) -> None:
        self.kc.stop_channels()


def attach(kernel: ServerKernel, workspace: str) -> dict:
    """Build a panel in the kernel (as re-running the notebook's cell does); what it shows."""
    out = kernel.run(textwrap.dedent(f"""
        import json
        from gemma_ft_widgets.ui import ControlPanel
        panel = ControlPanel({workspace!r}, poll=True, poll_interval=0.1)
        assert panel.wait_ready(30)
        print(json.dumps({{"state": panel.state, "run_dir": panel.run_dir,
                           "x": [int(v) for v in panel.dashboard.loss_line.x]}}))
    """))
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def servers(tmp_path, workspace):
    env = {contract.TRAINER_ENV: SIM_TRAINER, "GEMMA_FT_SIM_STEP_TIME": "0.05"}
    root = tmp_path / "root"
    root.mkdir()
    made: list[LabServer] = []

    def start() -> LabServer:
        server = LabServer(str(root), str(tmp_path / f"home{len(made)}"), env=env).start()
        made.append(server)
        return server

    yield start
    for server in made:
        if server.alive:
            server.kill(kernels_too=True)


def test_server_ctrl_c_and_sigkill_leave_the_run_alone_and_the_next_server_reattaches(servers, workspace):
    m = RunManager(workspace)
    first = servers()
    k1 = ServerKernel(first)
    k1.run(textwrap.dedent(f"""
        from gemma_ft_widgets.ui import ControlPanel
        panel = ControlPanel({workspace!r}, poll=True, poll_interval=0.1)
        assert panel.wait_ready(30)
        for k, v in dict(max_steps=100000, warmup_steps=0, eval_every=1000, checkpoint_every=1000).items():
            panel.form.fields[k].value = v
        panel.form.start_button.click()
        assert panel.wait_actions(30) and "Started" in panel.form.message.value, panel.form.message.value
    """))
    st = wait_step(m, 10)
    run_dir, pids = st.run_dir, lock_pids(workspace)
    kernel1 = psutil.Process(k1.pid)
    assert kernel1.pid in {p.pid for p in first.kernels()} and not set(pids) & {p.pid for p in first.kernels()}

    # 11: Ctrl+C (twice: no confirmation) in the terminal that runs the server.
    k1.close()
    first.stop()
    assert not first.alive
    wait_for(lambda: not kernel1.is_running() or kernel1.status() == psutil.STATUS_ZOMBIE, 30,
             what="the server to shut its kernel down")
    logged = m.status().step
    st = wait_step(m, logged + 20)
    assert st.state == State.RUNNING and st.run_dir == run_dir and not st.stop_requested
    assert all(not gone(pid, t) for pid, t in pids.items()), "the run's processes were touched"

    second = servers()
    k2 = ServerKernel(second)
    shown = attach(k2, workspace)
    assert shown["state"] == "RUNNING" and shown["run_dir"] == run_dir
    assert_whole_history(shown["x"], logged + 20)

    # 12: SIGKILL of the server alone; its kernel lives on, orphaned, then is killed too.
    orphan_kernels = second.kernels()
    k2.close()
    second.kill(kernels_too=False)
    assert not second.alive
    logged = m.status().step
    assert wait_step(m, logged + 20).state == State.RUNNING
    for p in orphan_kernels:
        p.kill()
    psutil.wait_procs(orphan_kernels, timeout=10)
    logged = m.status().step
    st = wait_step(m, logged + 20)
    assert st.state == State.RUNNING and st.run_dir == run_dir
    assert all(not gone(pid, t) for pid, t in pids.items())

    third = servers()
    k3 = ServerKernel(third)
    shown = attach(k3, workspace)
    assert shown["state"] == "RUNNING" and shown["run_dir"] == run_dir
    assert_whole_history(shown["x"], logged + 20)
    # The re-attached panel can still stop the run it never started.
    k3.run("panel.dashboard.abort_button.click(); panel.dashboard.confirm_button.click(); "
           "assert panel.wait_actions(60)")
    assert m.status().state == State.ABORTED
    k3.close()
    third.stop()
    events, _ = m.metrics(run_dir)
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and len([e for e in events if e["event"] == "start"]) == 1
