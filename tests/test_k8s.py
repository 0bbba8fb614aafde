"""Issue 16: `gemma-ft launch --k8s` writes an Indexed Job + headless Service. There is no
cluster here: the manifest is checked by the kubernetes client's own models (their required
fields and types), its wiring (pod hostnames, service, coordinator) by structure, and the
per-pod command is run as 2 real local tiny trainers, pod k's JOB_COMPLETION_INDEX set as
Kubernetes sets it. Not tested: a real cluster's DNS, scheduling and volume.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State

from .test_multiprocess import config, events


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_k8s_manifest_is_a_valid_indexed_job_whose_pod_command_trains_as_two_processes(tmp_path, monkeypatch):
    kubernetes = pytest.importorskip("kubernetes")
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv(contract.CPU_DEVICES_ENV, "2")
    from gemma_ft_widgets.runs.launch import package_env

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(max_steps=3)))
    ws = str(tmp_path / "ws")
    bad = cli("launch", str(cfg), "--k8s", "--processes", "2", "-w", ws, env=package_env())
    assert bad.returncode != 0 and "--image" in bad.stderr and not os.path.exists(ws)
    out = cli("launch", str(cfg), "--k8s", "--processes", "2", "--image", "example/gemma-ft:1",
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

    # Each pod's command, here: the pod-0 DNS name is 127.0.0.1 and a free port (no cluster DNS).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = f"127.0.0.1:{s.getsockname()[1]}"
    argv = [sys.executable if a == "python" else local if a == coordinator else a for a in cmd]
    pods = [subprocess.Popen(argv, cwd=run_dir, env={**package_env(), **{e.name: e.value for e in container.env},
                                                     "JOB_COMPLETION_INDEX": str(k)}) for k in range(2)]
    codes = [p.wait(timeout=600) for p in pods]
    assert codes == [0, 0], [open(os.path.join(run_dir, contract.process_log_name(contract.STDERR_NAME, k))).read()
                             for k in range(2)]
    devices = events(run_dir, "devices")[-1]
    assert devices["processes"] == 2 and devices["count"] == 4 and devices["local_count"] == 2
    assert len(events(run_dir, "step")) == 3
    st = RunManager(ws).status(run_dir)
    assert st.state == State.FINISHED and "reported FINISHED" in st.reason, st.reason
