"""The estimate's measured parts (#13): start-up from the workspace's own runs (startup.py),
and the CPU's rate from a cached matmul measurement (calibrate.py), never taken at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gemma_ft_widgets import calibrate, startup
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.estimate import estimate
from gemma_ft_widgets.runs import State
from gemma_ft_widgets.ui.form import ConfigForm

from .conftest import wait_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_cpu_rate_is_measured_once_cached_per_machine_and_never_at_import(tmp_path):
    code = ("import os, sys; import gemma_ft_widgets.estimate as E, gemma_ft_widgets.fit, gemma_ft_widgets.calibrate as C\n"
            "E.estimate({'model': 'gemma3-1b'}, device='gpu')\n"
            "print(os.path.exists(C.CACHE_PATH))\n"
            "e = E.estimate({'model': 'tiny'}, device='cpu')\n"
            "print(os.path.exists(C.CACHE_PATH), e.flops_per_step / e.step_time_s, C.measured_cpu_flops())\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.split("\n")[:2]
    assert before == "False"  # importing and a GPU estimate measure nothing
    exists, rate, cached = after.split()
    assert exists == "True" and float(rate) == float(cached) > 1e8  # the step time comes from the measurement
    with open(tmp_path / "gemma_ft_widgets" / "cpu_flops.json", encoding="utf-8") as f:
        stored = json.load(f)
    assert list(stored) == [calibrate.machine_key()] and stored[calibrate.machine_key()] == float(cached)
    # Another process reads the cache instead of measuring again.
    calibrate._memo.clear()
    path = str(tmp_path / "gemma_ft_widgets" / "cpu_flops.json")
    assert calibrate.measured_cpu_flops(path) == float(cached) == calibrate.cpu_flops(path)
    calibrate._memo.clear()


def test_start_up_is_measured_from_the_workspaces_runs(manager, make_config):
    ws = manager.workspace
    cfg = make_config(max_steps=3, checkpoint_every=1, eval_every=100)
    guessed = startup.startup(cfg, ws)
    assert not guessed.measured and guessed.source == "a guess: no run of this model here yet"
    assert guessed.seconds == startup.BASE_S + estimate(cfg).weights_bytes / startup.LOAD_BYTES_PER_S + 2
    run = manager.start(cfg)
    assert wait_state(manager, [State.FINISHED], run=run, timeout=120).state is State.FINISHED
    same = startup.startup(cfg, ws)
    assert same.measured and same.source == f"measured: same shapes, {run.name}"
    assert same.seconds > 0 and same.compile_s is not None and same.checkpoint_s is not None
    assert same.load_s is not None and same.load_s <= same.seconds
    other = startup.startup({**cfg, "batch_size": 2}, ws)
    assert other.source == f"measured: same model, other shapes, {run.name}" and other.seconds == same.seconds
    assert not startup.startup({**cfg, "model": "gemma3-1b"}, ws).measured
    # The form's estimate line says it, with where it came from.
    form = ConfigForm(os.path.join(ws, "uploads"), workspace=ws,
                      defaults={"dataset": sample_dataset_path(), "batch_size": 1, "max_steps": 3, "warmup_steps": 0})
    try:
        line = form.estimate_line.value
        assert "start-up" in line and f"measured: same shapes, {run.name}" in line, line
    finally:
        form.close()
