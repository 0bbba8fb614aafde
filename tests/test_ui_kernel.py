"""The panel in a real IPython kernel (jupyter_client): its thread updates widgets while the
kernel's main thread is busy, and after a kernel restart a new panel re-attaches to the run
with its whole history."""

from __future__ import annotations

import os
import textwrap

import pytest

from gemma_ft_widgets.runs import RunManager

from .kernel import Kernel

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel(tmp_path, sim_env):
    k = Kernel(str(tmp_path), env={"GEMMA_FT_SIM_STEP_TIME": "0.03"}).start()
    yield k
    k.shutdown()


def test_panel_updates_from_its_thread_and_reattaches_after_a_restart(kernel, workspace):
    kernel.execute(textwrap.dedent(f"""
        import time, threading
        from IPython.display import display
        from gemma_ft_widgets.ui import ControlPanel
        panel = ControlPanel({workspace!r}, poll_interval=0.1)
        display(panel)
        assert panel.wait_ready(30) and panel.view == "form", panel.view
        assert panel.comm is not None  # a real widget, talking to a (headless) front end
        for k, v in dict(max_steps=3000, warmup_steps=0, eval_every=50, checkpoint_every=100).items():
            panel.form.fields[k].value = v
        panel.form.start_button.click()
        assert panel.wait_actions(30)
    """))
    # The main thread is busy in one long cell; the poller keeps setting traits meanwhile.
    out = kernel.execute(textwrap.dedent("""
        seen = []
        for _ in range(30):
            time.sleep(0.1)
            seen.append(len(panel.dashboard.loss_line.x))
        print("SEEN", seen[0], seen[-1], panel.state, panel.view)
    """))
    _, first, last, state, view = out["stdout"].split()
    assert int(last) > int(first) >= 0 and view == "dashboard" and state in ("STARTING", "RUNNING")
    run_dir = kernel.eval("panel.run_dir")

    kernel.restart()  # the run goes on in its own process group
    out = kernel.execute(textwrap.dedent(f"""
        import time
        from gemma_ft_widgets.ui import ControlPanel
        panel = ControlPanel({workspace!r}, poll_interval=0.2)
        display(panel)
        assert panel.wait_ready(30)
        print("BACK", panel.run_dir, panel.state, len(panel.dashboard.loss_line.x),
              [int(x) for x in panel.dashboard.loss_line.x[:2]])
        panel.close()
    """))
    words = out["stdout"].split()
    assert words[1] == run_dir and words[2] == "RUNNING"
    shown = int(words[3])
    assert shown >= int(last)  # everything from before the restart, not just new points
    assert "[1, 2]" in out["stdout"]  # from the first step
    RunManager(workspace).stop(force=True)
    assert os.path.isdir(run_dir)
