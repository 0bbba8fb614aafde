"""Issue 16: a run launched through a REAL Slurm (Debian's slurm-wlm and munge, started by the
fixture as root on this one node; tests/slurm_cluster.py). `gemma-ft launch --slurm --submit`
sbatches a 2-task job; srun starts 2 real tiny trainers that join through jax.distributed's
Slurm detection. Status and stop go through the job (scontrol, scancel), never pids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import Facts, Proc, RunManager, State, derive_state, lockfile, slurm
from gemma_ft_widgets.runs.job_supervisor import task_end

from .conftest import wait_for
from .slurm_cluster import SlurmCluster, missing
from .test_multiprocess import config, events

START_S = 600  # two jobs of model loads and compiles on a loaded 2-core machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why:
        if os.environ.get("GEMMA_FT_REQUIRE_SLURM"):
            pytest.fail(f"a real Slurm is required here (GEMMA_FT_REQUIRE_SLURM), but {why}")
        pytest.skip(f"no Slurm: {why}")
    c = SlurmCluster(str(tmp_path_factory.mktemp("slurm"))).start()
    yield c
    c.stop()


def cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def losses(run_dir: str) -> list[float]:
    return [e["loss"] for e in events(run_dir, "step")]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_slurm_job_of_two_tasks_trains_like_the_local_two_processes_and_stops_through_scancel(
        cluster, tmp_path, monkeypatch):
    """`launch --slurm --submit` of 2 tasks x 2 forced devices: FINISHED, seen by `status`
    while it runs and after, losses equal to a local 2-process run within 1e-5; `resume` of it
    (to more steps) is a second job that trains on from its checkpoint. A further job is
    stopped by `gemma-ft stop` (scancel --signal=INT to the tasks), a third, at the same time, by
    a plain `scancel`: both ABORTED with a checkpoint, the run folders kept, the jobs ended, the
    locks gone."""
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv(contract.CPU_DEVICES_ENV, "2")
    monkeypatch.setenv("SLURM_CONF", cluster.conf)
    from gemma_ft_widgets.runs.launch import package_env

    env = package_env()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config()))
    ws = str(tmp_path / "ws")
    m = RunManager(ws, trainer=contract.DEFAULT_TRAINER)
    # The reference, at the same time: the local supervisor's 2 processes.
    local = RunManager(str(tmp_path / "local"), trainer=contract.DEFAULT_TRAINER)
    ref = local.start({**config(), "num_processes": 2})

    out = cli("launch", str(cfg), "--slurm", "--tasks-per-node", "2", "--submit", "-w", ws, env=env)
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.strip()
    assert "submitted as Slurm job" in out.stderr
    job_id = lockfile.read_lock(ws).data["scheduler"]["job_id"]
    assert slurm.job_state(job_id) in ("PENDING", "RUNNING")
    script = open(os.path.join(run_dir, slurm.SCRIPT_NAME)).read()
    assert "#SBATCH --ntasks-per-node=2" in script and "gemma_ft_widgets.runs.job_supervisor" in script
    seen = json.loads(cli("status", "--json", "-w", ws, env=env).stdout)
    assert seen["active"] and seen["job"]["job_id"] == job_id and seen["state"] in ("STARTING", "RUNNING")

    st = m.wait(until=State.FINISHED, timeout=START_S)
    assert st.state == State.FINISHED, (st.reason, open(os.path.join(run_dir, contract.SUPERVISOR_LOG_NAME)).read())
    # The result is written just before the job supervisor clears the lock and the job ends.
    wait_for(lambda: slurm.job_state(job_id) == "COMPLETED" and not lockfile.read_lock(ws).present, 120,
             interval=0.5, what="the job to complete and its lock to go")
    out = cli("status", "-w", ws, env=env)
    assert "FINISHED" in out.stdout, out.stdout
    assert local.wait(until=State.FINISHED, timeout=START_S).state == State.FINISHED
    got, want = losses(run_dir), losses(ref.run_dir)
    assert len(got) == len(want) == 20
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5, (got, want)
    devices = events(run_dir, "devices")[-1]
    assert devices["count"] == 4 and devices["processes"] == 2 and devices["local_count"] == 2
    # Each task kept its own logs, named as under the local supervisor.
    assert os.path.getsize(os.path.join(run_dir, contract.process_log_name(contract.STDOUT_NAME, 1))) > 0

    # A resume goes through Slurm too (it ran this host's trainers before): a new job of the same
    # script for attempt 2, which trains on from the newest checkpoint.
    out = cli("resume", "--max-steps", "25", "-w", ws, env=env)
    assert out.returncode == 0, out.stderr
    job2 = lockfile.read_lock(ws).data["scheduler"]["job_id"]
    assert job2 != job_id and "--attempt 2" in open(os.path.join(run_dir, slurm.SCRIPT_NAME)).read()
    wait_for(lambda: (lambda st: st if st.state == State.FINISHED and st.step == 25 else None)(m.status(run_dir)),
             START_S, what="the resumed job to finish at step 25")
    start2 = events(run_dir, "start")[-1]
    assert (start2["attempt"], start2["resume_step"]) == (2, 20)
    wait_for(lambda: slurm.job_state(job2) == "COMPLETED" and not lockfile.read_lock(ws).present, 120,
             interval=0.5, what="the resumed job to complete and its lock to go")

    # Two long jobs at once (another workspace for the second): one stopped by `gemma-ft stop`,
    # the other cancelled by hand with a plain `scancel`.
    cfg.write_text(json.dumps(config(max_steps=100000)))
    ws2 = str(tmp_path / "ws2")
    jobs = {}
    for w in (ws, ws2):
        out = cli("launch", str(cfg), "--slurm", "--tasks-per-node", "2", "--submit", "-w", w, env=env)
        assert out.returncode == 0, out.stderr
        jobs[w] = (out.stdout.strip(), lockfile.read_lock(w).data["scheduler"]["job_id"])
    for w, (run, job) in jobs.items():
        st = RunManager(w).wait(run, until=State.RUNNING, timeout=START_S)
        assert st.state == State.RUNNING and st.job["state"] == "RUNNING", st.reason
    out = cli("stop", "-w", ws, env=env)
    assert out.returncode == 0, out.stderr
    assert "scancel --signal=INT" in out.stdout, out.stdout
    cancelled = subprocess.run(["scancel", jobs[ws2][1]], env=cluster.env, capture_output=True, text=True)
    assert cancelled.returncode == 0, cancelled.stderr
    for w, (run, job) in jobs.items():
        st = RunManager(w).wait(run, until=State.ABORTED, timeout=START_S)
        log = open(os.path.join(run, contract.SUPERVISOR_LOG_NAME)).read()
        assert st.state == State.ABORTED, (st.reason, log)
        assert os.path.isdir(run) and not st.active, (st.reason, log)
        wait_for(lambda: (slurm.job_state(job) or "").split()[0] in ("COMPLETED", "CANCELLED")
                 and not lockfile.read_lock(w).present, 120, interval=0.5, what="the job to end, the lock to go")
    # Both saved a checkpoint: the SIGTERM of a plain scancel reaches the trainers' stop flag
    # (jax's preemption service used to take it, and Slurm killed them KillWait later).
    for w, (run, job) in jobs.items():
        assert RunManager(w).status(run).checkpoints, open(os.path.join(run, contract.STDERR_NAME)).read()[-3000:]
    assert "cancelled (scancel)" in RunManager(ws2).status(jobs[ws2][0]).reason


# srun's own reports, as this Slurm (22.05) printed them for `srun --kill-on-bad-exit=1 -n2`.
SRUN_KILLED = """srun: error: vm: task 1: Killed
srun: launch/slurm: _step_signal: Terminating StepId=2.0
slurmstepd-vm: error: *** STEP 2.0 ON vm CANCELLED AT 2026-12-02T00:06:40 ***
srun: error: vm: task 0: Terminated
srun: Force Terminated StepId=2.0"""


def test_the_task_that_ended_first_decides_and_is_named():
    assert task_end(SRUN_KILLED) == (1, -9)  # process 1 killed by SIGKILL, not its terminated peer
    assert task_end("srun: error: vm: task 1: Exited with exit code 1\nsrun: error: vm: task 0: Terminated") == (1, 1)
    assert task_end("srun: error: vm: tasks 0-1: Exited with exit code 3") == (0, 3)
    assert task_end("srun: job 3 queued and waiting for resources") is None


def _scheduled(job: dict, **facts) -> tuple[State, str]:
    lock = {"run_dir": "/ws/r", "attempt": 1, "hostname": "elsewhere", "boot_id": "x",
            "scheduler": {"kind": "slurm", "job_id": job.get("job_id")}}
    return derive_state(Facts(lock=lock, host="here", boot_id="y", job={"kind": "slurm", **job}, **facts))


def test_a_scheduled_runs_state_comes_from_its_job_not_from_pids_or_hosts():
    assert _scheduled({"job_id": "7", "state": "PENDING", "active": True})[0] == State.STARTING
    assert _scheduled({"job_id": "7", "state": "RUNNING", "active": True}, stepped=True)[0] == State.RUNNING
    assert _scheduled({"job_id": "7", "state": "RUNNING", "active": True}, stop_requested=True)[0] == State.STOPPING
    state, reason = _scheduled({"job_id": "7", "state": "CANCELLED", "active": False})
    assert state == State.ABORTED and "Slurm job 7 was cancelled" in reason
    state, reason = _scheduled({"job_id": "7", "state": "NODE_FAIL", "active": False})
    assert state == State.FAILED and "ended NODE_FAIL" in reason
    assert _scheduled({"job_id": "7", "state": None, "active": False})[0] == State.ORPHANED
    # Slurm cannot be asked: still active, never taken for dead.
    state, reason = _scheduled({"job_id": "7", "state": None, "active": None, "error": "scontrol is not installed"},
                               stepped=True)
    assert state == State.RUNNING and "cannot ask Slurm" in reason
    assert _scheduled({"job_id": None}, launcher=Proc.ALIVE)[0] == State.STARTING
    result = {"state": "FINISHED", "reason": "finished", "attempt": 1}
    assert _scheduled({"job_id": "7", "state": "COMPLETED", "active": False}, result=result)[0] == State.FINISHED


def test_launch_refuses_bad_options_before_creating_anything(tmp_path):
    from gemma_ft_widgets.runs.launch import package_env

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(num_processes=3, batch_size=6)))
    ws = tmp_path / "ws"
    for args, needle in ((["--nodes", "0"], "--nodes must be a positive integer"),
                         (["--tasks-per-node", "2"], "num_processes 3, but --nodes 1 x --tasks-per-node 2")):
        out = cli("launch", str(cfg), "--slurm", *args, "-w", str(ws), env=package_env())
        assert out.returncode != 0 and needle in out.stderr, out.stderr
        assert not ws.exists() or not os.listdir(ws)
    out = cli("launch", str(cfg), "--slurm", "--nodes", "3", "-w", str(ws), env=package_env())  # written only
    assert out.returncode == 0, out.stderr
    st = RunManager(str(ws)).status()
    assert st.state == State.IDLE and "sbatch" in st.reason and not st.active
    assert "#SBATCH --nodes=3" in open(os.path.join(out.stdout.strip(), slurm.SCRIPT_NAME)).read()
