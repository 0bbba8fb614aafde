"""Panels are cheap to open and close: no threads, file descriptors or widgets left behind,
and building one never imports jax."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

from gemma_ft_widgets.runs import RunManager
from gemma_ft_widgets.ui import ControlPanel

from .conftest import wait_for


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_widgets() -> int:
    from ipywidgets.widgets import widget

    return len(widget._instances)


def test_50_panels_opened_and_closed_leak_no_threads_fds_or_widgets(workspace, sim_env, make_config):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.05")
    manager = RunManager(workspace)
    manager.start(make_config(max_steps=5000))  # a live run, so every panel polls real files
    wait_for(lambda: (manager.status().step or 0) >= 3, 30, what="steps")
    warm = ControlPanel(workspace, poll=True, poll_interval=0.02)  # first-use caches, imports
    time.sleep(0.1)
    warm.close()
    gc.collect()
    threads, fds, widgets = threading.active_count(), open_fds(), live_widgets()
    for _ in range(50):
        p = ControlPanel(workspace, poll=True, poll_interval=0.02)
        assert p.polling and p.wait_ready(10) and p.view == "dashboard"
        time.sleep(0.03)  # let the poller run a few times
        p.close()
        assert not p.polling
    gc.collect()
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    assert open_fds() <= fds, sorted(os.listdir("/proc/self/fd"))
    assert live_widgets() <= widgets
    assert not any(t.name.startswith("gft-") for t in threading.enumerate())
    manager.stop(force=True)


def test_building_a_panel_does_not_import_jax(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from gemma_ft_widgets.ui import ControlPanel
        p = ControlPanel({str(tmp_path / 'ws')!r}, poll=True, poll_interval=0.05)
        p.form.fields['max_seq_len'].value = 64   # preview with the tokenizer, estimate line
        p.refresh()
        p._repr_mimebundle_() if hasattr(p, '_repr_mimebundle_') else None
        p.close()
        heavy = [m for m in ('jax', 'jaxlib', 'flax', 'optax', 'tensorflow', 'gemma', 'orbax') if m in sys.modules]
        print('HEAVY', heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
