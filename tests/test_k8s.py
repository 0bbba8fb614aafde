"""Issue 16: `gemma-ft launch --k8s` writes an Indexed Job + headless Service; with --submit it
holds the workspace lock and applies it, and status, stop and resume go through kubectl. There
is no cluster here: the manifest is checked by the kubernetes client's own models (their
required fields and types), its wiring (pod hostnames, service, coordinator) by structure.
Applying it goes to tests/fake_kubectl.py, a kubectl stand-in whose pods are local processes
(pod k's JOB_COMPLETION_INDEX set as Kubernetes sets it, <job>-0.<job> resolving to
127.0.0.1): 2 real tiny trainers there, and the simulated trainer for --submit, status, stop
and resume. Not tested: a real cluster's API server, DNS, scheduling and volume.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import psutil
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State, k8s, lockfile
from gemma_ft_widgets.runs.launch import package_env

from . import fake_kubectl
from .conftest import wait_for, wait_state
from .test_multiprocess import config, events


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_k8s_manifest_is_a_valid_indexed_job_whose_pod_command_trains_as_two_processes(tmp_path, monkeypatch,
                                                                                       kubectl):
    kubernetes = pytest.importorskip("kubernetes")
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv(contract.CPU_DEVICES_ENV, "2")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(max_steps=3)))
    ws = str(tmp_path / "ws")
    bad = cli("launch", str(cfg), "--k8s", "--processes", "2", "-w", ws, env=package_env())
    assert bad.returncode != 0 and "--image" in bad.stderr and not os.path.exists(ws)
    with socket.socket() as s:  # the coordinator's port, free here: its pods run on this host
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = cli("launch", str(cfg), "--k8s", "--processes", "2", "--image", "example/gemma-ft:1", "--port", port,
              "--volume-claim", "shared-ws", "-w", ws, env=package_env())
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()
    run_dir = os.path.dirname(path)
    assert RunManager(ws).status(run_dir).state == State.IDLE  # written, not applied

    doc = json.load(open(path))
    service, job = doc["items"]
    api = kubernetes.client.ApiClient()
    # The client's models refuse missing required fields and wrong types.
    svc_model = api._ApiClient__deserialize(service, "V1Service")
    job_model = api._ApiClient__deserialize(job, "V1Job")
    assert svc_model.spec.cluster_ip == "None"  # headless: one DNS record per pod
    spec = job_model.spec
    assert spec.completion_mode == "Indexed" and spec.completions == spec.parallelism == 2
    assert spec.backoff_limit == 0
    pod = spec.template.spec
    assert pod.subdomain == svc_model.metadata.name and pod.restart_policy == "Never"
    assert all(spec.template.metadata.labels[k] == v for k, v in svc_model.spec.selector.items())
    container = pod.containers[0]
    assert container.volume_mounts[0].mount_path == ws
    assert pod.volumes[0].persistent_volume_claim.claim_name == "shared-ws"
    cmd = container.command
    coordinator = cmd[cmd.index("--coordinator") + 1]
    port = svc_model.spec.ports[0].port
    assert coordinator == f"{job_model.metadata.name}-0.{svc_model.metadata.name}:{port}"
    assert cmd[cmd.index("--process-id-env") + 1] == "JOB_COMPLETION_INDEX"
    assert {e.name: e.value for e in container.env} == {contract.CPU_DEVICES_ENV: "2"}

    # Applied by hand, as the user would without --submit, to the kubectl stand-in: its 2 pods are
    # local processes, and the coordinator's DNS name <job>-0.<job> is 127.0.0.1.
    done = subprocess.run(["kubectl", "apply", "-f", path], capture_output=True, text=True, env=package_env())
    assert done.returncode == 0, done.stderr
    name = job_model.metadata.name

    def job_status():
        out = subprocess.run(["kubectl", "get", "job", name, "-o", "json"], capture_output=True, text=True)
        return json.loads(out.stdout)["status"]

    status = wait_for(lambda: (lambda s: s if not s["active"] else None)(job_status()), 600, 1.0, "the Job's end")
    assert status["succeeded"] == 2, [open(os.path.join(run_dir, contract.process_log_name(contract.STDERR_NAME, k)))
                                      .read() for k in range(2)]
    devices = events(run_dir, "devices")[-1]
    assert devices["processes"] == 2 and devices["count"] == 4 and devices["local_count"] == 2
    assert len(events(run_dir, "step")) == 3
    st = RunManager(ws).status(run_dir)
    assert st.state == State.FINISHED and "reported FINISHED" in st.reason, st.reason


# -- `launch --k8s --submit`, status, stop and resume, against the kubectl stand-in ---------------

@pytest.fixture
def kubectl(tmp_path, monkeypatch):
    """The kubectl stand-in first on PATH; at the end, every Job a test left is deleted."""
    state = str(tmp_path / "cluster")
    fake_kubectl.install(str(tmp_path / "bin"), state)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    (tmp_path / "empty").mkdir()
    yield state
    for root, dirs, _ in os.walk(state):
        for d in [d for d in dirs if d.startswith("Job-")]:
            job = json.load(open(os.path.join(root, d, "job.json")))
            fake_kubectl.delete(state, [job], os.path.basename(root), 1.0, True)


@pytest.fixture
def kube(kubectl, sim_env):
    """The stand-in, and the simulated trainer."""
    return kubectl


def submit(tmp_path, make_config, *extra, **overrides) -> subprocess.CompletedProcess:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(make_config(**overrides)))
    return cli("launch", str(cfg), "--k8s", "--processes", "1", "--image", "example/gemma-ft:1", "--submit",
               "-w", str(tmp_path / "ws"), *extra, env=package_env())


def pod_pids(state: str) -> list[int]:
    return [json.load(open(os.path.join(root, n)))["pid"] for root, _, files in os.walk(state)
            for n in files if n.startswith("pod-") and n.endswith(".json")]


def no_kubectl(tmp_path) -> dict:
    return {**package_env(), "PATH": str(tmp_path / "empty")}


def test_k8s_submit_is_seen_stopped_and_resumed_through_kubectl(kube, tmp_path, make_config):
    """--submit holds the lock naming the Job and applies it; status asks kubectl (and, with
    kubectl gone, says it cannot ask rather than that the run died); `gemma-ft stop` deletes the
    Job: its trainer gets SIGTERM, saves a checkpoint, ABORTED, folder kept, lock and pods gone.
    `gemma-ft resume` applies the manifest again as attempt 2, from that checkpoint."""
    ws = str(tmp_path / "ws")
    out = submit(tmp_path, make_config, max_steps=100000, checkpoint_every=10)
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.strip()
    name = k8s.job_name(os.path.basename(run_dir))
    assert f"applied as Kubernetes Job {name}" in out.stderr
    lock = lockfile.read_lock(ws).data
    assert lock["scheduler"] == {"kind": "k8s", "job_id": name, "namespace": "default"} and lock["launcher"] is None
    m = RunManager(ws)
    st = wait_state(m, State.RUNNING, timeout=60)
    assert st.job["state"] == "RUNNING" and f"Kubernetes job {name} (RUNNING)" in st.reason
    assert "RUNNING" in cli("status", "-w", ws, env=package_env()).stdout
    blind = cli("status", "-w", ws, env=no_kubectl(tmp_path))
    assert "RUNNING" in blind.stdout and "cannot ask Kubernetes: kubectl is not installed" in blind.stdout, blind.stdout
    pods = [psutil.Process(pid) for pid in pod_pids(kube)]
    assert len(pods) == 1

    out = cli("stop", "-w", ws, env=package_env())
    assert out.returncode == 0, out.stderr
    st = m.status(run_dir)
    assert st.state == State.ABORTED and f"Kubernetes job {name} was deleted" in st.reason, st.reason
    assert "after saving a checkpoint" in st.reason and st.checkpoints and os.path.isdir(run_dir)
    assert not lockfile.read_lock(ws).present and not any(p.is_running() for p in pods)
    assert "(NotFound)" in subprocess.run(["kubectl", "get", "job", name, "-o", "json"], capture_output=True,
                                          text=True).stderr
    saved = st.checkpoints[-1]

    out = cli("resume", run_dir, "-w", ws, env=package_env())
    assert out.returncode == 0, out.stderr
    start = wait_for(lambda: [e for e in events(run_dir, "start") if e["attempt"] == 2], 60, what="attempt 2")[0]
    assert start["resume_step"] == saved
    command = json.load(open(os.path.join(run_dir, k8s.MANIFEST_NAME)))["items"][1]["spec"]["template"]["spec"][
        "containers"][0]["command"]
    assert command[command.index("--attempt") + 1] == "2"
    assert lockfile.read_lock(ws).data["scheduler"]["job_id"] == name
    report = m.stop(force=True)
    assert report.state == State.ABORTED and not lockfile.read_lock(ws).present, report.reason


def test_k8s_job_that_ends_on_its_own_is_finished_or_failed_and_frees_the_workspace(kube, tmp_path, make_config,
                                                                                  sim_env):
    """No supervisor writes result.json for a Job: status reads the trainers' `final` and the
    Job's state; a next start finds the ended Job's lock stale, and writes the result down. A
    pod that fails fails the Job, and the run."""
    ws = str(tmp_path / "ws")
    out = submit(tmp_path, make_config, max_steps=5)
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.strip()
    m = RunManager(ws)
    st = wait_state(m, State.FINISHED, run_dir, timeout=60)
    assert "the trainers reported FINISHED at step 5" in st.reason and "ended COMPLETE" in st.reason, st.reason
    assert lockfile.read_lock(ws).present  # nobody in the Job clears it
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "2")
    out = submit(tmp_path, make_config, max_steps=5)  # not blocked by the ended Job's lock
    assert out.returncode == 0, out.stderr
    assert m.status(run_dir).state == State.FINISHED  # its result, written when the lock was cleared
    st = wait_state(m, State.FAILED, out.stdout.strip(), timeout=60)
    assert "ended FAILED (BackoffLimitExceeded" in st.reason, st.reason


def test_k8s_submit_without_kubectl_fails_clearly_and_keeps_the_folder(kube, tmp_path, make_config):
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "launch", "--help"], capture_output=True,
                         text=True, env=package_env())
    assert "kubectl apply" in out.stdout
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(make_config()))
    ws = str(tmp_path / "ws")
    out = cli("launch", str(cfg), "--k8s", "--processes", "1", "--image", "x", "--submit", "-w", ws,
              env=no_kubectl(tmp_path))
    assert out.returncode == 1 and "kubectl is not installed here" in out.stderr, out.stderr
    (run,) = RunManager(ws).runs()
    assert run.state == State.FAILED and "kubectl is not installed" in run.reason
    assert os.path.isfile(os.path.join(run.run_dir, k8s.MANIFEST_NAME)) and not lockfile.read_lock(ws).present


def test_a_jobs_status_maps_to_one_state_word():
    from gemma_ft_widgets.runs.kubectl import ACTIVE, job_status_state

    cond = lambda kind, **kw: {"conditions": [{"type": kind, "status": "True", **kw}]}  # noqa: E731
    assert job_status_state({}) == "PENDING"  # the controller made no pod yet
    assert job_status_state({"active": 2, "ready": 0}) == "PENDING"  # pods scheduled, none running
    assert job_status_state({"active": 2, "ready": 1}) == "RUNNING"
    assert job_status_state({"active": 2}) == "RUNNING"  # before Kubernetes 1.24: no `ready`
    assert job_status_state({"succeeded": 2, **cond("Complete")}) == "COMPLETE"
    failed = job_status_state({"failed": 1, **cond("Failed", reason="BackoffLimitExceeded", message="limit")})
    assert failed == "FAILED (BackoffLimitExceeded: limit)"
    assert job_status_state({"active": 1, **cond("FailureTarget")}) == "ENDING"  # pods still terminating
    assert job_status_state({"active": 1, "conditions": [{"type": "Failed", "status": "False"}]}) == "RUNNING"
    assert {"PENDING", "RUNNING", "ENDING"} <= ACTIVE and not {"COMPLETE", "FAILED"} & ACTIVE


def _k8s(job: dict, **facts) -> tuple[State, str]:
    from gemma_ft_widgets.runs import Facts, derive_state

    lock = {"run_dir": "/ws/r", "attempt": 1, "hostname": "elsewhere", "boot_id": "x",
            "scheduler": {"kind": "k8s", "job_id": "j", "namespace": "default"}}
    return derive_state(Facts(lock=lock, host="here", boot_id="y", job={"kind": "k8s", "job_id": "j", **job},
                              **facts))


def test_a_kubernetes_runs_state_comes_from_its_job_and_its_trainers_final():
    from gemma_ft_widgets.runs import Proc

    assert _k8s({"state": "PENDING", "active": True}) == (State.STARTING, "Kubernetes job j is queued (PENDING)")
    assert _k8s({"state": "RUNNING", "active": True}, stepped=True)[0] == State.RUNNING
    state, reason = _k8s({"state": "COMPLETE", "active": False}, stepped=True, final={"state": "FINISHED", "step": 9})
    assert state == State.FINISHED and reason.endswith("at step 9; Kubernetes job j ended COMPLETE")
    state, reason = _k8s({"state": "FAILED (BackoffLimitExceeded: x)", "active": False}, stepped=True)
    assert state == State.FAILED and "ended FAILED (BackoffLimitExceeded" in reason
    state, reason = _k8s({"state": None, "active": False}, stop_requested=True)  # deleted by the stop
    assert state == State.ABORTED and "was deleted" in reason
    assert _k8s({"state": None, "active": False})[0] == State.ORPHANED  # deleted by someone, no final
    # Recorded before `kubectl apply` created it: starting while the launcher lives.
    assert _k8s({"state": None, "active": False}, launcher=Proc.ALIVE)[0] == State.STARTING
    state, reason = _k8s({"state": None, "active": None, "error": "kubectl is not installed here"}, stepped=True)
    assert state == State.RUNNING and "cannot ask Kubernetes: kubectl is not installed here" in reason
