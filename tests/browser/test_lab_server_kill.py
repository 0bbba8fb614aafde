"""The Jupyter server dies (SIGKILL, its kernel with it) while a run trains with the real
trainer; the run never stops, and a new server's notebook re-attaches to it."""

import psutil
import pytest

from gemma_ft_widgets.runs import RunManager

from . import drive

pytestmark = pytest.mark.browser


def test_server_killed_while_training_run_survives_and_reattaches(make_lab, tmp_path, page, new_page,
                                                                   workspaces, artifacts):
    ws = workspaces(tmp_path / "ws")
    env = {"GEMMA_FT_WORKSPACE": ws, "GEMMA_FT_TRAINER": None}
    manager = RunManager(ws)

    first = make_lab(env=env)
    drive.open_notebook(page, first, drive.QUICKSTART)
    drive.show_panel(page)
    drive.start_run(page, 20000)
    drive.wait_badge(page, "RUNNING", 300)  # the real trainer: jax import and compile first
    status = manager.status()
    assert status.state.value == "RUNNING"
    name, trainer_pid = status.run_name, status.trainer_pid
    drive.screenshot(page, artifacts, "lab_server_kill-1-before.png", page.locator(".gft-panel"))

    # The crash: SIGKILL to the server's process group, and to its kernel.
    kernels = first.kernels()
    assert kernels, "the notebook's kernel runs under the server"
    assert trainer_pid not in {k.pid for k in kernels}, "the run is not one of the kernel's processes"
    first.kill(kernels_too=True)
    assert not first.alive
    _gone, alive = psutil.wait_procs(kernels, timeout=10)
    assert not alive, f"kernel processes left: {alive}"

    # The run never noticed: same trainer process, still RUNNING, steps still advancing.
    step = manager.status().step or 0
    advanced = drive.wait_for(lambda: (lambda st: st if st.state.value == "RUNNING" and (st.step or 0) >= step + 20
                                       else None)(manager.status()), 120, what="the run to keep training")
    assert advanced.run_name == name and advanced.trainer_pid == trainer_pid
    assert psutil.pid_exists(trainer_pid)
    steps_before = sum(1 for e in manager.metrics()[0] if e["event"] == "step")

    # A new server on the same folder; the notebook's panel finds the run, with its history.
    second = make_lab(env=env)
    page2 = new_page()
    drive.open_notebook(page2, second, drive.QUICKSTART)
    drive.show_panel(page2)
    drive.assert_reattached(page2, name, steps_before, "logged before")
    after = manager.status()
    assert after.state.value == "RUNNING" and after.trainer_pid == trainer_pid and after.attempt == status.attempt
    drive.assert_no_widget_errors(page2)
    drive.screenshot(page2, artifacts, "lab_server_kill-2-reattached.png", page2.locator(".gft-panel"))
