"""Reading one run folder (plus the workspace lock and the process table) into a RunStatus.

All the I/O lives here; the decision itself is `state.derive_state`, a pure function.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from typing import Any

import psutil

from .. import contract, stall
from ..config import split_tags
from . import identity, liveness
from .lockfile import LockRead
from .metrics import MetricsSummary
from .state import ACTIVE_STATES, Facts, Proc, State, derive_state, valid_result


@dataclasses.dataclass
class RunStatus:
    """Everything shown about one run: its state and why, progress, times, processes."""

    state: State
    reason: str = ""
    run_dir: str | None = None
    run_name: str | None = None
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    eval_loss: float | None = None
    started_at: str | None = None
    ended_at: str | None = None
    elapsed_s: float | None = None  # the latest attempt
    wall_s: float | None = None  # all attempts together (run_facts.attempts)
    exit_code: int | None = None
    signal_name: str | None = None
    last_checkpoint: str | None = None
    checkpoints: list[int] = dataclasses.field(default_factory=list)
    attempt: int | None = None
    foreign_host: str | None = None  # the lock's host, when it is not this machine
    active: bool = False  # a lock exists and blocks a new start
    can_resume: bool = False
    model: str | None = None
    supervisor_pid: int | None = None
    trainer_pid: int | None = None
    stop_requested: bool = False
    metrics_offset: int = 0
    corrupt_metric_lines: int = 0
    stderr_offset: int = 0  # where the ended attempt's lines start in trainer_stderr.log
    group: str | None = None  # the sweep it belongs to (run_info.json)
    queue_id: str | None = None  # the queue entry it was started from (run_info.json)
    devices: dict[str, Any] | None = None  # the attempt's `devices` event: platform, device_kind, count
    lock_missing: bool = False  # alive (its folder's flock is held) but no workspace lock names it
    last_step_at: str | None = None  # when the latest step event was written
    damaged_checkpoints: list[str] = dataclasses.field(default_factory=list)  # checkpoints/step_N.damaged
    stalled_s: float | None = None  # RUNNING, but nothing written for this long (past stall.py's limit)
    stall_basis_s: float | None = None  # RUNNING: its longest pause, seen or expected (stall.basis)
    # A multi-process run: [{"process", "pid", "host", "alive"}] of its trainers (from the lock
    # while it runs, from result.json once it ended), None for a run of one process.
    processes: list[dict[str, Any]] | None = None
    job: dict[str, Any] | None = None  # launched through a scheduler: {"kind", "job_id", "state"}
    tags: list[str] = dataclasses.field(default_factory=list)  # the config's tags
    # STARTING: the trainer's latest `phase` event (runs/phases.py: downloading, tokenizing, ...)
    phase: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The status as JSON-ready values (the state as its name)."""
        d = dataclasses.asdict(self)
        d["state"] = self.state.value
        return d


@dataclasses.dataclass
class LockCheck:
    """The lock of one run, checked against this machine and the process table."""

    data: dict[str, Any]
    foreign: bool  # another host: never checked, never signalled
    rebooted: bool
    supervisor: Proc = Proc.NONE
    trainer: Proc = Proc.NONE
    launcher: Proc = Proc.NONE
    procs: dict[str, psutil.Process] = dataclasses.field(default_factory=dict)  # verified, alive
    # Processes 1.. of a multi-process run: alive ones are in `procs` as "trainer.<k>" too.
    peers: dict[int, Proc] = dataclasses.field(default_factory=dict)
    # A run launched through a scheduler (the lock's "scheduler"): what the scheduler says of its
    # job (runs/scheduled.py), instead of pids.
    job: dict[str, Any] | None = None

    @property
    def trainer_roles(self) -> list[str]:
        """"trainer", "trainer.1", ...: the verified live trainer processes."""
        return [r for r in self.procs if r == "trainer" or r.startswith("trainer.")]

    @property
    def alive(self) -> bool:
        """Some process of the run lives (or its scheduler job, or the launcher before the supervisor)."""
        if self.job is not None:  # unknown (the scheduler cannot be asked) is not proof of death
            return self.job.get("active") is not False or self.launcher == Proc.ALIVE
        return bool(self.procs) or (self.supervisor == Proc.NONE and self.launcher == Proc.ALIVE)

    @property
    def stale(self) -> bool:
        """Provably dead on this machine, so a new start may clear it."""
        return not self.foreign and (self.rebooted or not self.alive)


def check_lock(data: dict[str, Any]) -> LockCheck:
    """The lock's processes checked against this machine: verified by pid, create time and cmdline."""
    if data.get("scheduler"):  # its processes are the scheduler's, wherever they run
        from .jobs import job_of

        check = LockCheck(data, foreign=False, rebooted=False, job=job_of(data))
        check.launcher = identity.launcher_process(data)
        return check
    foreign = data.get("hostname") != identity.hostname()
    rebooted = not foreign and data.get("boot_id") != identity.boot_id()
    check = LockCheck(data, foreign, rebooted)
    if foreign or rebooted:
        return check
    for role in ("supervisor", "trainer"):
        verdict, proc = identity.lock_process(data, role)
        setattr(check, role, verdict)
        if proc is not None:
            check.procs[role] = proc
    for k, (verdict, proc) in identity.lock_peers(data).items():
        check.peers[k] = verdict
        if proc is not None:
            check.procs[f"trainer.{k}"] = proc
    if check.supervisor == Proc.NONE:
        check.launcher = identity.launcher_process(data)
    return check


def read_result(run_dir: str) -> tuple[dict | None, str | None]:
    """(result, None), (None, why unreadable) or (None, None) when there is none."""
    try:
        obj = contract.read_json(os.path.join(run_dir, contract.RESULT_NAME))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, str(e).split(": ", 1)[-1] if isinstance(e, ValueError) else str(e)
    problem = valid_result(obj)
    return (None, problem) if problem else (obj, None)


def stop_requested(run_dir: str, attempt: Any) -> bool:
    """Whether stop_request.json asks this attempt to stop."""
    try:
        req = contract.read_json(os.path.join(run_dir, contract.STOP_REQUEST_NAME))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(req, dict) and req.get("attempt", attempt) == attempt


def read_run_info(run_dir: str) -> dict[str, Any]:
    """run_info.json ({name, group, queue_id}), or {} for a run started without one."""
    try:
        info = contract.read_json(os.path.join(run_dir, contract.RUN_INFO_NAME))
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return info if isinstance(info, dict) else {}


def read_config(run_dir: str) -> dict[str, Any] | None:
    """The run's config.json as a dict, or None when it is missing or unreadable."""
    try:
        cfg = contract.read_json(os.path.join(run_dir, contract.CONFIG_NAME))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return cfg if isinstance(cfg, dict) else None


def run_status(run_dir: str, lock: LockRead, summary: MetricsSummary, config: dict[str, Any] | None,
               lock_error: str | None = None, lock_check: LockCheck | None = None) -> RunStatus:
    """The status of `run_dir`. `lock` is the workspace lock; it matters only if it names this
    run. An unreadable lock names no run: the caller passes `lock_error` to the one it blames."""
    summary.refresh()
    result, result_error = read_result(run_dir)
    data = lock.data if lock.data and _same(lock.data.get("run_dir"), run_dir) else None
    if data is not None and lock_check is None:
        lock_check = check_lock(data)
    # Without a lock naming it, a run may still be alive: its folder says so (runs/liveness.py).
    lock_missing = data is None and result is None and liveness.held(run_dir)
    facts = _facts(run_dir, summary, data, lock_check, lock_error, result, result_error, lock_missing)
    state, reason = derive_state(facts)

    checkpoints = contract.checkpoint_steps(run_dir)
    st = RunStatus(state=state, reason=reason, run_dir=run_dir, run_name=os.path.basename(run_dir))
    _fill_from_metrics(st, summary, config)
    _fill_checkpoints(st, run_dir, checkpoints)
    st.stop_requested = facts.stop_requested
    if data is not None:
        _fill_from_lock(st, data, lock_check)
    if lock_missing:
        st.active = st.lock_missing = True
    if result is not None and (data is None or state not in ACTIVE_STATES):
        _fill_from_result(st, result)
    _fill_times(st, summary, run_dir)
    if data is not None and not os.path.isdir(run_dir):
        st.reason = (f"its run folder no longer exists at {run_dir} (moved or deleted while the run went on); the "
                     "trainer stops at its next checkpoint") + (f"; {st.reason}" if st.reason else "")
    step_time = (summary.last_step or {}).get("time")
    st.last_step_at = _iso(step_time) if isinstance(step_time, (int, float)) else None
    if state == State.RUNNING and st.foreign_host is None:
        _fill_stall(st, summary, config)
    st.processes = _with_reports(_processes(data, lock_check, result), run_dir)
    if lock_check is not None and lock_check.job is not None:
        st.job = dict(lock_check.job)
    if state == State.STARTING:
        st.phase = summary.last_phase
    st.can_resume = (not st.active and st.foreign_host is None and
                     (state in (State.ORPHANED, State.ABORTED) or (state == State.FAILED and bool(checkpoints))))
    return st


def _facts(run_dir: str, summary: MetricsSummary, data: dict[str, Any] | None, lock_check: LockCheck | None,
           lock_error: str | None, result: dict | None, result_error: str | None, lock_missing: bool) -> Facts:
    """What `derive_state` decides from: the lock (`data`, None unless it names this run) and
    its processes, the result, the metrics and the folder."""
    facts = Facts(
        lock=data,
        lock_error=lock_error,
        host=identity.hostname(),
        boot_id=identity.boot_id(),
        stepped=_stepped_in(summary, data),
        result=result,
        result_error=result_error,
        final=_final_of(summary, data),
        lock_missing=lock_missing,
        prepared=_prepared(run_dir) if data is None and result is None and not lock_missing else None,
    )
    if lock_missing:
        last_attempt = (summary.last_start or {}).get("attempt")
        facts = dataclasses.replace(facts, stop_requested=stop_requested(run_dir, last_attempt))
    if data is not None and lock_check is not None:
        facts = dataclasses.replace(
            facts,
            supervisor=lock_check.supervisor, trainer=lock_check.trainer, launcher=lock_check.launcher,
            pids={"supervisor": data.get("supervisor_pid"), "trainer": data.get("trainer_pid")},
            stop_requested=stop_requested(run_dir, data.get("attempt")), job=lock_check.job,
            live_peers={e["process"]: e.get("pid") for e in data.get("trainers") or []
                        if isinstance(e, dict) and f"trainer.{e.get('process')}" in lock_check.procs},
        )
    return facts


def _fill_from_metrics(st: RunStatus, summary: MetricsSummary, config: dict[str, Any] | None) -> None:
    """The latest step, eval and devices (metrics.jsonl), and what the config says."""
    st.step = summary.value("step", "step")
    st.loss = summary.value("step", "loss")
    st.lr = summary.value("step", "lr")
    st.tokens_per_s = summary.value("step", "tokens_per_s")
    st.eval_loss = summary.value("eval", "eval_loss")
    st.max_steps = summary.value("start", "max_steps") or (config or {}).get("max_steps")
    if summary.last_devices is not None:
        st.devices = {k: summary.last_devices.get(k) for k in ("platform", "device_kind", "count", "processes")}
    st.model = (config or {}).get("model")
    tags = (config or {}).get("tags")
    st.tags = split_tags(tags) if isinstance(tags, str) else []
    st.metrics_offset = summary.reader.offset
    st.corrupt_metric_lines = summary.reader.corrupt_lines


def _fill_checkpoints(st: RunStatus, run_dir: str, checkpoints: list[int]) -> None:
    st.checkpoints = checkpoints
    st.damaged_checkpoints = _damaged(run_dir) if st.checkpoints is not None else []
    st.last_checkpoint = contract.checkpoint_rel(checkpoints[-1]) if checkpoints else None


def _fill_from_lock(st: RunStatus, data: dict[str, Any], lock_check: LockCheck | None) -> None:
    """The attempt, start and pids of the run the lock names; active unless provably dead."""
    st.attempt = data.get("attempt")
    st.started_at = data.get("started_at")
    st.supervisor_pid, st.trainer_pid = data.get("supervisor_pid"), data.get("trainer_pid")
    if lock_check is not None and lock_check.foreign:
        st.foreign_host = str(data.get("hostname"))
    st.active = lock_check is not None and not lock_check.stale


def _fill_from_result(st: RunStatus, result: dict[str, Any]) -> None:
    """How the ended attempt ended (result.json): it wins over the lock's start."""
    st.attempt = result.get("attempt", st.attempt)
    st.started_at = result.get("started_at") or st.started_at
    st.ended_at = result.get("ended_at")
    st.exit_code = result.get("exit_code")
    st.signal_name = result.get("signal_name")
    offset = result.get("stderr_offset")
    st.stderr_offset = offset if isinstance(offset, int) and offset >= 0 else 0
    if result.get("final_step") is not None:
        st.step = result.get("final_step")


def _fill_times(st: RunStatus, summary: MetricsSummary, run_dir: str) -> None:
    """Attempt and start from the metrics where lock and result had none; elapsed and wall time."""
    if st.attempt is None and summary.last_start is not None:
        st.attempt = summary.last_start.get("attempt")
    if st.started_at is None and summary.first_time is not None:
        st.started_at = _iso(summary.first_time)
    st.elapsed_s = _elapsed(st.started_at, st.ended_at if not st.active else None)
    st.wall_s = st.elapsed_s
    if (st.attempt or 1) > 1:  # resumed: "elapsed" and "Finished in" count every attempt
        from .run_facts import attempts  # (it imports this module)

        wall = attempts(run_dir)[1]
        st.wall_s = round(wall, 3) if wall is not None and wall >= (st.elapsed_s or 0) else st.elapsed_s


def _fill_stall(st: RunStatus, summary: MetricsSummary, config: dict[str, Any] | None) -> None:
    """A RUNNING run's longest pause, and how long it has been quiet past stall.py's limit."""
    if summary.stepped:
        st.stall_basis_s = round(stall.basis(summary, config), 3)
    quiet = stall.stalled_for(summary, config, time.time())
    if quiet is not None:
        st.stalled_s = round(quiet[0], 1)
        st.reason = stall.describe(*quiet) + (f"; {st.reason}" if st.reason else "")


REPORT_FIELDS = ("host", "devices", "platform", "device_kind", "host_rss_bytes", "device_mem_bytes")


def _with_reports(processes: list[dict] | None, run_dir: str) -> list[dict] | None:
    """Each process's own report (devices, memory; train/process_report.py) joined in, with its
    age: what a process said before it ended stays, marked by `report_age_s`."""
    if not processes or len(processes) < 2:  # only runs of several processes write reports
        return processes
    from ..train.process_report import read_reports

    reports = read_reports(run_dir)
    now = time.time()
    for p in processes:
        r = reports.get(p.get("process"))
        if r and (p.get("pid") is None or r.get("pid") == p.get("pid")):  # not a report of an earlier attempt
            p.update({k: r[k] for k in REPORT_FIELDS if r.get(k) is not None})
            if isinstance(r.get("time"), (int, float)):
                p["report_age_s"] = round(max(0.0, now - r["time"]), 1)
    return processes


def describe_process(p: dict) -> str:
    """One process for `gemma-ft status`: "1: pid 4242 alive on node-2, 2 cpu devices, host 1.2 GB"."""
    from ..estimate import format_bytes

    parts = [f"{p.get('process')}: pid {p.get('pid')} " + {True: "alive", False: "gone", None: "?"}[p.get("alive")]
             + (f" on {p['host']}" if p.get("host") else "")]
    if p.get("devices"):
        parts.append(" ".join(str(x) for x in (len(p["devices"]), p.get("platform"), "device(s)", p["devices"]) if x))
    if p.get("host_rss_bytes"):
        parts.append(f"host {format_bytes(p['host_rss_bytes'])}")
    if p.get("device_mem_bytes"):
        parts.append(f"device {format_bytes(p['device_mem_bytes'])}")
    return ", ".join(parts)


def _processes(lock: dict | None, check: LockCheck | None, result: dict | None) -> list[dict] | None:
    if lock is not None and check is not None and lock.get("trainers"):
        host = lock.get("hostname")
        alive = lambda k: None if check.foreign else f"trainer.{k}" in check.procs or (k == 0 and "trainer" in check.procs)
        return [{"process": e.get("process"), "pid": e.get("pid"), "host": host, "alive": alive(e.get("process"))}
                for e in lock["trainers"] if isinstance(e, dict)]
    if result is not None and isinstance(result.get("processes"), list):
        out = []
        for e in result["processes"]:
            if isinstance(e, dict):
                pid = e.get("pid")
                out.append({"process": e.get("process"), "pid": pid, "alive": _pid_alive(e),
                            "exit_code": e.get("exit_code"), "signal_name": e.get("signal_name")})
        return out
    return None


def _prepared(run_dir: str) -> str | None:
    """The batch script or manifest `gemma-ft launch` wrote into the run folder, if any."""
    from .k8s import MANIFEST_NAME
    from .slurm import SCRIPT_NAME

    for name in (SCRIPT_NAME, MANIFEST_NAME):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            return path
    return None


def _pid_alive(entry: dict) -> bool:
    """An ended run's trainer, recorded in result.json, still running (by identity)?"""
    verdict = identity.check(entry.get("pid"), entry.get("create_time"), entry.get("cmdline"))
    return verdict == Proc.ALIVE


def fmt_devices(devices: dict[str, Any] | None) -> str:
    """"1 × gpu (NVIDIA H200)": what the trainer's jax trains on."""
    if not devices:
        return "-"
    kind = devices.get("device_kind")
    platform = str(devices.get("platform") or "?")
    return f"{devices.get('count') or '?'} × {platform}" + (f" ({kind})" if kind and kind != platform else "")


def _damaged(run_dir: str) -> list[str]:
    """Checkpoints the trainer could not restore (renamed step_N.damaged, kept)."""
    try:
        names = os.listdir(os.path.join(run_dir, contract.CHECKPOINTS_DIR))
    except OSError:
        return []
    return sorted(f"{contract.CHECKPOINTS_DIR}/{n}" for n in names if contract.DAMAGED_SUFFIX in n)


def _stepped_in(summary: MetricsSummary, lock: dict[str, Any] | None) -> bool:
    """A step after the latest start, if that start is the lock's attempt: on a resume, the
    previous attempt's steps must not make the new one look RUNNING before its trainer starts."""
    if not summary.stepped:
        return False
    return lock is None or summary.last_start is None or summary.last_start.get("attempt") == lock.get("attempt")


def _final_of(summary: MetricsSummary, lock: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trainer's `final` event after its latest `start`, if that start is the lock's attempt."""
    if summary.last_final is None or summary.last_start is None:
        return None
    if lock is not None and summary.last_start.get("attempt") != lock.get("attempt"):
        return None
    return summary.last_final


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and os.path.realpath(a) == os.path.realpath(b)


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC time, or None for anything else."""
    if not isinstance(s, str):
        return None
    try:
        return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC).timestamp()
    except ValueError:
        try:
            return _dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def _elapsed(started: Any, ended: Any) -> float | None:
    t0 = parse_iso(started)
    if t0 is None:
        return None
    t1 = parse_iso(ended) if ended else time.time()
    return None if t1 is None else max(0.0, round(t1 - t0, 3))
