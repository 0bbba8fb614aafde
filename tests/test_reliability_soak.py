"""Reliability soak (docs/lifecycle.md): 20 start/abort cycles back to back through the panel
API in a real kernel, then 5 through the CLI while that panel polls. Afterwards no process the
locks ever named is alive, no lock is left, every run folder holds its result, and the
kernel's thread and file-descriptor counts are back where they started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State, lockfile

from .conftest import wait_for, wait_state
from .kernel import Kernel
from .test_reliability import assert_all_gone, lock_pids

pytestmark = pytest.mark.slow
PANEL_CYCLES, CLI_CYCLES = 20, 5
LONG = 100_000

KERNEL_SETUP = """
import gc, json, os, threading, time
from gemma_ft_widgets.runs import lockfile
from gemma_ft_widgets.ui import ControlPanel

WS = {ws!r}
panel = ControlPanel(WS, poll=True, poll_interval=0.05)
assert panel.wait_ready(30)
for k, v in dict(max_steps={long}, warmup_steps=0, eval_every=1000, checkpoint_every=1000).items():
    panel.form.fields[k].value = v
named = {{}}  # pid -> create time, for every process a lock named
errors = []  # every error the panel reports (its own log keeps only the last few lines)
_note = panel.note
def note(text, kind="info"):
    if kind == "error":
        errors.append(text)
    _note(text, kind)
panel.note = note

def until(pred, timeout=60, what="condition"):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"timed out in the kernel waiting for {{what}}"
        time.sleep(0.01)

def lock_with_trainer():
    data = lockfile.read_lock(WS).data
    return data if data and data.get("trainer_pid") and len(data.get("create_times") or {{}}) == 2 else None

def cycle():
    if panel.view != "form":
        panel.outcome.new_run_button.click()  # the form, pre-filled from the run just aborted
        until(lambda: panel.view == "form", what="form")
    until(lambda: not panel.form.start_button.disabled, what="Start enabled")
    panel.form.start_button.click()
    assert panel.wait_actions(30)
    assert "Started" in panel.form.message.value, panel.form.message.value
    until(lambda: panel.state == "RUNNING" and lock_with_trainer(), what="RUNNING")
    named.update(lock_with_trainer()["create_times"])
    run_dir = panel.run_dir
    panel.dashboard.abort_button.click()
    panel.dashboard.confirm_button.click()
    assert panel.wait_actions(60)
    until(lambda: panel.state == "ABORTED" and panel.run_dir == run_dir, what="ABORTED")
    return run_dir

def counts():
    gc.collect()
    return threading.active_count(), len(os.listdir("/proc/self/fd"))
"""


@pytest.fixture
def kernel(tmp_path, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_STEP_TIME", "0.02")
    k = Kernel(str(tmp_path)).start()
    yield k
    k.shutdown()


def last_json(out: dict):
    return json.loads(out["stdout"].strip().splitlines()[-1])


def test_soak_20_panel_and_5_cli_start_abort_cycles_leak_nothing(kernel, workspace, tmp_path):
    kernel.execute(KERNEL_SETUP.format(ws=workspace, long=LONG))
    # Warm up once (first-use imports, caches, lazily created threads), then take the baseline.
    kernel.execute("cycle(); time.sleep(0.3)")
    baseline = last_json(kernel.execute("print(json.dumps(counts()))"))

    out = kernel.execute(textwrap.dedent(f"""
        t0 = time.monotonic()
        dirs = [cycle() for _ in range({PANEL_CYCLES})]
        print(json.dumps({{"dirs": dirs, "seconds": time.monotonic() - t0}}))
    """), timeout=300)
    panel_runs = last_json(out)["dirs"]
    named = {int(p): t for p, t in kernel.eval("named").items()}
    assert len(set(panel_runs)) == PANEL_CYCLES

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": sample_dataset_path(), "max_steps": LONG, "warmup_steps": 0,
                                  "checkpoint_every": 1000, "eval_every": 1000}))
    m = RunManager(workspace)
    cli_runs = []
    for _ in range(CLI_CYCLES):  # from a terminal, while the kernel's panel polls the same workspace
        out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "start", str(config), "-w", workspace],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        run_dir = out.stdout.strip()
        wait_state(m, State.RUNNING, run=run_dir)
        named.update(lock_pids(workspace))
        out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "stop", "-w", workspace],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "now ABORTED" in out.stdout, (out.stdout, out.stderr)
        cli_runs.append(run_dir)
    # The panel followed the terminal's runs.
    kernel.execute(f"until(lambda: panel.run_dir == {cli_runs[-1]!r} and panel.state == 'ABORTED', what='CLI run')")

    # No leaked process, no stale lock, every folder intact with its result.
    assert len(named) == 2 * (1 + PANEL_CYCLES + CLI_CYCLES)  # with the warm-up cycle
    assert_all_gone(named)
    assert not lockfile.read_lock(workspace).present
    runs = m.runs()
    assert len(runs) == 1 + PANEL_CYCLES + CLI_CYCLES and all(r.state == State.ABORTED for r in runs)
    for r in runs:
        files = set(os.listdir(r.run_dir))
        assert {contract.RESULT_NAME, contract.CONFIG_NAME, contract.METRICS_NAME, contract.STATUS_LOG_NAME} <= files
        result = json.load(open(os.path.join(r.run_dir, contract.RESULT_NAME)))
        assert result["state"] == "ABORTED" and r.last_checkpoint and r.can_resume
    assert {r.run_dir for r in runs} >= set(panel_runs) | set(cli_runs)

    # The kernel is back where it started: threads (reapers and workers end) and descriptors.
    after = last_json(kernel.execute(textwrap.dedent(f"""
        base = {baseline!r}
        t0 = time.monotonic()
        while any(a > b for a, b in zip(counts(), base)) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        print(json.dumps(list(counts()) + [sorted(t.name for t in threading.enumerate())]))
    """)))
    assert after[0] <= baseline[0], f"threads {baseline[0]} -> {after[0]}: {after[2]}"
    assert after[1] <= baseline[1], f"file descriptors {baseline[1]} -> {after[1]}"
    assert kernel.eval("(panel.polling, panel.poll_errors)") == (True, 0), kernel.eval("errors")


DAMAGE_ROUNDS = 5


def test_soak_rounds_with_the_lock_deleted_mid_run_and_a_checkpoint_damaged_before_resume(workspace, tmp_path):
    """Issue 11: 5 rounds, each from a terminal on the simulated trainer: start, delete the
    workspace lock mid-run (the run stays RUNNING, a second start is refused, stop reaches
    it), then damage the newest checkpoint and resume (the previous one is used, the damaged
    one kept as step_N.damaged), then stop. Nothing is lost and no process is left."""
    from gemma_ft_widgets.runs import liveness

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": sample_dataset_path(), "max_steps": LONG, "warmup_steps": 0,
                                  "checkpoint_every": 5, "keep_checkpoints": 100, "eval_every": 1000}))
    m = RunManager(workspace)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args, "-w", workspace],
                              capture_output=True, text=True, timeout=60)

    named: dict[int, float] = {}
    for _ in range(DAMAGE_ROUNDS):
        out = cli("start", str(config))
        assert out.returncode == 0, out.stderr
        run_dir = out.stdout.strip()
        wait_state(m, State.RUNNING, run=run_dir)
        named.update(lock_pids(workspace))
        os.unlink(lockfile.lock_path(workspace))  # deleted mid-run
        st = m.status(run_dir)
        assert st.state == State.RUNNING and st.lock_missing, (st.state, st.reason)
        assert cli("start", str(config)).returncode == 1  # no second run beside it
        wait_for(lambda: len(contract.checkpoint_steps(run_dir)) >= 2, 30, what="2 checkpoints")
        out = cli("stop")
        assert out.returncode == 0 and "now ABORTED" in out.stdout, (out.stdout, out.stderr)
        assert not liveness.held(run_dir)

        steps = contract.checkpoint_steps(run_dir)
        with open(os.path.join(contract.checkpoint_path(run_dir, steps[-1]), "state.json"), "r+") as f:
            f.truncate(5)  # damaged before resume
        out = cli("resume", os.path.basename(run_dir))
        assert out.returncode == 0, out.stderr
        wait_state(m, State.RUNNING, run=run_dir)
        named.update(lock_pids(workspace))
        starts = [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)) if e["event"] == "start"]
        assert starts[-1]["resume_step"] == steps[-2]
        assert os.path.isdir(contract.checkpoint_path(run_dir, steps[-1]) + contract.DAMAGED_SUFFIX)
        out = cli("stop")
        assert out.returncode == 0 and "now ABORTED" in out.stdout, (out.stdout, out.stderr)

    assert_all_gone(named)
    assert len(named) == 4 * DAMAGE_ROUNDS
    assert not lockfile.read_lock(workspace).present
    runs = m.runs()
    assert len(runs) == DAMAGE_ROUNDS and all(r.state == State.ABORTED and r.attempt == 2 for r in runs)
    for r in runs:
        assert len(r.damaged_checkpoints) == 1 and r.checkpoints and r.can_resume
        assert {contract.RESULT_NAME, "result.attempt-1.json", contract.CONFIG_NAME, contract.METRICS_NAME} \
            <= set(os.listdir(r.run_dir))
