"""A stand-in for kubectl, kept in tests: no Kubernetes API server can run here (none is
installable from PyPI, Debian or npm). Its "cluster" is a folder, and it runs each pod of an
Indexed Job as a local process, as a kubelet runs a container:
- `apply -f M`: pod k of a Job is the container's command ("python" is this Python, and the
  environment is the caller's: the image is this machine), its env plus JOB_COMPLETION_INDEX=k,
  in its workingDir. A detached watcher per pod records the pod's pid and exit code. The
  coordinator's DNS name <job>-0.<job> resolves to 127.0.0.1.
- `get job NAME -n NS -o json`: the Job with a .status made from those records; NotFound once
  it was deleted.
- `delete -f M`: SIGTERM to each pod it started (pid and create time checked), SIGKILL after
  --grace-period, then the Job is gone.
tests/test_k8s.py puts a `kubectl` wrapper first on PATH (install).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import psutil

INDEX_ENV = "JOB_COMPLETION_INDEX"


def install(bin_dir: str, state_dir: str) -> str:
    """Write `bin_dir/kubectl`, which runs this stand-in on `state_dir`; returns its path."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "kubectl")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.join([sys.executable, os.path.abspath(__file__), state_dir])} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def _write(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


def _read(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def _pods(job_dir: str, n: int) -> list[tuple[dict | None, int | None]]:
    """(pod record, exit code) of each pod."""
    return [(_read(os.path.join(job_dir, f"pod-{k}.json")), _read(os.path.join(job_dir, f"exit-{k}")))
            for k in range(n)]


def run_pod(job_dir: str, k: int) -> None:
    """The watcher of pod k: run it, record its pid, then its exit code."""
    job = _read(os.path.join(job_dir, "job.json"))
    name = job["metadata"]["name"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    argv = [sys.executable if a == "python" else a.replace(f"{name}-0.{name}", "127.0.0.1")
            for a in container["command"]]
    env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}, INDEX_ENV: str(k)}
    pod = subprocess.Popen(argv, cwd=container.get("workingDir"), env=env, stdin=subprocess.DEVNULL)
    _write(os.path.join(job_dir, f"pod-{k}.json"), {"pid": pod.pid, "create_time": psutil.Process(pod.pid).create_time()})
    code = pod.wait()
    _write(os.path.join(job_dir, f"exit-{k}"), code)
    if code != 0 and job["spec"].get("backoffLimit") == 0:  # the Job failed: the controller ends its other pods
        _signal_pods(job_dir, job, signal.SIGTERM)


def _signal_pods(job_dir: str, job: dict, sig: int) -> int:
    """Signal the pods still running (those this stand-in started: pid and create time match)."""
    sent = 0
    for rec, code in _pods(job_dir, job["spec"]["parallelism"]):
        if rec is None or code is not None:
            continue
        try:
            p = psutil.Process(rec["pid"])
            if abs(p.create_time() - rec["create_time"]) < 0.01:
                p.send_signal(sig)
                sent += 1
        except psutil.Error:
            pass
    return sent


def status(job_dir: str, job: dict) -> dict:
    n = job["spec"]["parallelism"]
    pods = _pods(job_dir, n)
    ended = [code for _, code in pods if code is not None]
    out = {"active": n - len(ended), "ready": sum(rec is not None and code is None for rec, code in pods),
           "succeeded": ended.count(0), "failed": len(ended) - ended.count(0), "conditions": []}
    if out["failed"]:
        kind = "FailureTarget" if out["active"] else "Failed"
        out["conditions"].append({"type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                                  "message": "Job has reached the specified backoff limit"})
    elif out["succeeded"] == job["spec"]["completions"]:
        out["conditions"].append({"type": "Complete", "status": "True"})
    return out


def apply(state: str, items: list[dict], ns: str) -> int:
    for obj in items:
        kind, name = obj["kind"], obj["metadata"]["name"]
        where = os.path.join(state, ns, f"{kind}-{name}")
        if os.path.isdir(where):
            if _read(os.path.join(where, "job.json")) != obj:
                print(f'The {kind} "{name}" is invalid: spec.template: field is immutable', file=sys.stderr)
                return 1
            print(f"{kind.lower()}/{name} unchanged")
            continue
        os.makedirs(where)
        _write(os.path.join(where, "job.json"), obj)
        for k in range(obj["spec"]["parallelism"] if kind == "Job" else 0):
            subprocess.Popen([sys.executable, __file__, state, "_pod", where, str(k)], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"{kind.lower()}/{name} created")
    return 0


def delete(state: str, items: list[dict], ns: str, grace: float, ignore_missing: bool) -> int:
    code = 0
    for obj in items:
        kind, name = obj["kind"], obj["metadata"]["name"]
        where = os.path.join(state, ns, f"{kind}-{name}")
        if not os.path.isdir(where):
            if not ignore_missing:
                print(f'Error from server (NotFound): {kind.lower()}s "{name}" not found', file=sys.stderr)
                code = 1
            continue
        if kind == "Job":
            n = obj["spec"]["parallelism"]
            _wait(lambda: all(rec or c is not None for rec, c in _pods(where, n)), 10)  # pods still starting
            if _signal_pods(where, obj, signal.SIGTERM):
                _wait(lambda: all(c is not None for _, c in _pods(where, n)), grace)
                _signal_pods(where, obj, signal.SIGKILL)
                _wait(lambda: all(c is not None for _, c in _pods(where, n)), 10)  # the watchers record it
        shutil.rmtree(where)
        print(f'{kind.lower()} "{name}" deleted')
    return code


def main(argv: list[str]) -> int:
    state, args = argv[0], argv[1:]
    if args[0] == "_pod":
        run_pod(args[1], int(args[2]))
        return 0
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}
    flags = {a for a in args if a.startswith("--") and "=" not in a}
    words, i = [], 0
    while i < len(args):
        if args[i] in ("-f", "-n", "-o"):
            opts[args[i]] = args[i + 1]
            i += 2
            continue
        if not args[i].startswith("--"):
            words.append(args[i])
        i += 1
    ns = opts.get("-n", "default")
    if words[0] == "get" and words[1] == "job":
        job_dir = os.path.join(state, ns, f"Job-{words[2]}")
        job = _read(os.path.join(job_dir, "job.json"))
        if job is None:
            print(f'Error from server (NotFound): jobs.batch "{words[2]}" not found', file=sys.stderr)
            return 1
        print(json.dumps({**job, "status": status(job_dir, job)}))
        return 0
    items = _read(opts["-f"])["items"]
    if words[0] == "apply":
        return apply(state, items, ns)
    if words[0] == "delete":
        return delete(state, items, ns, float(opts.get("--grace-period", 30)), "--ignore-not-found" in flags)
    print(f"fake kubectl: {' '.join(args)} is not supported", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
