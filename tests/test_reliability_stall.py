"""Issue 11, defect 6: stall detection. A trainer frozen with SIGSTOP (as by a hung filesystem
or a stuck collective) kept showing RUNNING with a confident ETA forever. Now the status
carries `last_step_at`, and RUNNING says "stalled: no step for T" once T passes a limit taken
from the run's own pauses; the CLI and the panel say so, and it clears when steps resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from gemma_ft_widgets import contract, stall
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State, lockfile
from gemma_ft_widgets.runs.status import check_lock
from gemma_ft_widgets.ui import ControlPanel

from .conftest import wait_for, wait_state

pytestmark = pytest.mark.slow


def test_a_trainer_frozen_with_sigstop_is_reported_stalled_then_recovers(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=contract.DEFAULT_TRAINER)
    m.start({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 10**6, "batch_size": 2,
             "eval_every": 10**6, "checkpoint_every": 10**6})
    trainer = None
    try:
        wait_state(m, State.RUNNING, timeout=240)
        wait_for(lambda: (m.status().step or 0) >= 20, 120, what="20 steps")
        st = m.status()
        assert st.last_step_at and st.stalled_s is None and st.reason == ""
        trainer = check_lock(lockfile.read_lock(m.workspace).data).procs["trainer"]  # verified identity
        trainer.send_signal(signal.SIGSTOP)
        frozen_at = time.time()
        st = wait_for(lambda: (lambda s: s if s.stalled_s else None)(m.status()), 120, what="stalled")
        assert st.state == State.RUNNING and st.reason.startswith("stalled: no step for"), st.reason
        # The stall counts from the last step, taken a moment before the freeze.
        assert st.stalled_s >= stall.MIN_STALL_S and time.time() - frozen_at > 0.5 * stall.MIN_STALL_S
        out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "status", "--workspace", m.workspace],
                             capture_output=True, text=True, timeout=60)
        assert "RUNNING  (stalled: no step for" in out.stdout, out.stdout
        panel = ControlPanel(m.workspace, poll=False)
        try:
            panel.refresh()
            assert "stalled: no step for" in panel.dashboard.phase.value
            assert panel.dashboard.kpi("eta") == "stalled"
        finally:
            panel.close()
        trainer.send_signal(signal.SIGCONT)
        wait_for(lambda: m.status().stalled_s is None, 60, what="steps again")
        assert m.status().state == State.RUNNING
    finally:
        if trainer is not None:
            try:
                trainer.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        m.stop(timeout=120)
    assert m.status().state == State.ABORTED
