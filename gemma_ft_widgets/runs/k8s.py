"""Kubernetes: the manifest of a run of N trainer processes, one pod each (`gemma-ft launch --k8s`).

An Indexed Job (completionMode Indexed: pod k gets JOB_COMPLETION_INDEX=k and the stable
hostname <job>-<k>) and a headless Service that gives those hostnames DNS names, so every pod
finds process 0's coordinator at <job>-0.<service>:<port>. Each pod runs runs/job_task.py, which
sets the trainer's jax.distributed settings from that. The workspace must be a volume every pod
mounts at the same path (a ReadWriteMany claim). Nothing here talks to a cluster: the manifest
is written to the run folder, and applied by the user or by `--submit` (runs/scheduled.py,
through runs/kubectl.py), which also holds the workspace lock; a stop is `kubectl delete -f` it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from .. import contract
from .errors import RunError

MANIFEST_NAME = "k8s.json"  # in the run folder; `kubectl apply -f` takes JSON
DEFAULT_PORT = 8476
INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclasses.dataclass(frozen=True)
class Options:
    """The `gemma-ft launch --k8s` settings: process count, image, coordinator port, namespace, volume."""

    processes: int = 2
    image: str | None = None
    port: int | None = None
    namespace: str = "default"
    claim: str | None = None  # a PersistentVolumeClaim holding the workspace
    mount: str | None = None  # where the claim is mounted (default: the workspace's path)


def job_name(run_name: str) -> str:
    """A DNS-1035 label short enough for pod hostnames "<job>-<index>"."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"gemma-ft-{run_name}".lower()).strip("-")
    return name[:50].rstrip("-")


def manifest(run_dir: str, workspace: str, trainer: str, opts: Options, env: dict[str, str]) -> dict[str, Any]:
    """The List of the headless Service and the Indexed Job that run `opts.processes` pods of runs/job_task.py on
    `run_dir` (see the module docstring)."""
    name = job_name(os.path.basename(run_dir))
    port = opts.port or DEFAULT_PORT
    n = opts.processes
    command = ["python", "-m", "gemma_ft_widgets.runs.job_task", run_dir, "--trainer", trainer, "--attempt", "1",
               "--coordinator", f"{name}-0.{name}:{port}", "--num-processes", str(n),
               "--process-id-env", INDEX_ENV]
    labels = {"app.kubernetes.io/name": "gemma-ft", "gemma-ft/run": name}
    container: dict[str, Any] = {
        "name": "trainer", "image": opts.image, "command": command, "workingDir": run_dir,
        "ports": [{"containerPort": port, "name": "coordinator"}],
        "env": [{"name": k, "value": env[k]} for k in (contract.CPU_DEVICES_ENV,) if env.get(k)],
    }
    pod: dict[str, Any] = {"subdomain": name, "restartPolicy": "Never", "containers": [container]}
    if opts.claim:
        container["volumeMounts"] = [{"name": "workspace", "mountPath": opts.mount or workspace}]
        pod["volumes"] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": opts.claim}}]
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": opts.namespace, "labels": labels},
               "spec": {"clusterIP": "None", "selector": {"gemma-ft/run": name},
                        "ports": [{"name": "coordinator", "port": port, "targetPort": port}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": opts.namespace, "labels": labels},
           "spec": {"completionMode": "Indexed", "completions": n, "parallelism": n,
                    # One pod that fails ends the run: its peers would wait in a collective.
                    "backoffLimit": 0,
                    "template": {"metadata": {"labels": labels}, "spec": pod}}}
    return {"apiVersion": "v1", "kind": "List", "items": [service, job]}


def write_manifest(manager, config: Any, opts: Options) -> str:
    """Create the run folder with its config and manifest; returns the manifest's path. Bad
    options are refused before anything is created."""
    from ..config import TrainingConfig
    from .launch import package_env

    if not isinstance(opts.processes, int) or opts.processes < 1:
        raise RunError(f"--processes must be a positive integer, got {opts.processes!r}")
    if not opts.image:
        raise RunError("--k8s needs --image: a container image with gemma_ft_widgets installed")
    if opts.port is not None and not 0 < opts.port < 65536:
        raise RunError(f"--port must be a port number, got {opts.port}")
    raw = config.to_dict() if isinstance(config, TrainingConfig) else dict(config)
    if raw.get("num_processes", 1) not in (1, opts.processes):
        raise RunError(f"the config says num_processes {raw['num_processes']}, but --processes is {opts.processes}")
    cfg = TrainingConfig.from_dict({**raw, "num_processes": opts.processes})
    manager._make_workspace()
    run_dir = manager._new_run_dir(cfg.run_name_prefix())
    os.mkdir(run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg.to_dict())
    path = os.path.join(run_dir, MANIFEST_NAME)
    contract.atomic_write_json(path, manifest(run_dir, manager.workspace, manager.trainer, opts, package_env()))
    return path


def job_of_manifest(path: str) -> tuple[str, str]:
    """(job name, namespace) of the Job in a manifest write_manifest wrote."""
    job = _job(contract.read_json(path), path)
    return job["metadata"]["name"], job["metadata"].get("namespace") or "default"


def set_attempt(path: str, attempt: int) -> None:
    """Point the manifest's pods at `attempt` (a resume): the "--attempt" of their command."""
    doc = contract.read_json(path)
    try:
        command = _job(doc, path)["spec"]["template"]["spec"]["containers"][0]["command"]
    except (KeyError, IndexError, TypeError):
        command = []
    if not isinstance(command, list) or command.count("--attempt") != 1:
        raise RunError(f"{path} is not the manifest `gemma-ft launch --k8s` wrote (no single --attempt); "
                       "launch the run again")
    command[command.index("--attempt") + 1] = str(attempt)
    contract.atomic_write_json(path, doc)


def _job(doc: Any, path: str) -> dict[str, Any]:
    items = doc.get("items") if isinstance(doc, dict) else None
    jobs = [i for i in items or [] if isinstance(i, dict) and i.get("kind") == "Job"]
    if len(jobs) != 1:
        raise RunError(f"{path} is not the manifest `gemma-ft launch --k8s` wrote (no single Job in it)")
    return jobs[0]
