"""Stopping a run: graceful first (SIGINT to the trainer, which checkpoints), then SIGTERM,
then SIGKILL to the whole process group. Only verified processes are ever signalled.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil

from .. import contract
from . import identity, lockfile
from .results import write_result
from .state import State
from .status import LockCheck, read_result

POLL_S = 0.05


@dataclasses.dataclass
class StopReport:
    """What a stop did: the signals sent, how long it took, and the state afterwards."""

    run_dir: str | None
    nothing_to_stop: bool = False
    sent: list[str] = dataclasses.field(default_factory=list)  # e.g. "SIGINT to trainer (pid 12)"
    seconds: float = 0.0
    group_gone: bool = True
    state: State | None = None  # the run's state afterwards
    reason: str = ""
    message: str = ""
    remedies: tuple = ()  # errors.Remedy values for a stop that could not be done

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (the state as its name)."""
        d = dataclasses.asdict(self)
        d["state"] = self.state.value if self.state else None
        return d

    def __str__(self) -> str:
        return self.message


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _in_group(p: psutil.Process, pgid: Any) -> bool:
    try:
        return os.getpgid(p.pid) == pgid
    except OSError:
        return False


def _wait(cond: Callable[[], bool], timeout: float, tick: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        if tick:
            tick()
        time.sleep(POLL_S)


def stop_processes(workspace: str, check: LockCheck, force: bool, timeout: float,
                   term_timeout: float, kill_timeout: float) -> StopReport:
    """Stop the verified processes of `check` (the caller made sure some are alive)."""
    data = check.data
    run_dir, attempt = data["run_dir"], data.get("attempt")
    t0 = time.monotonic()
    report = StopReport(run_dir=run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.STOP_REQUEST_NAME), {
        "requested_at": contract.utc_now(), "force": force, "by_pid": os.getpid(), "attempt": attempt})
    contract.append_status(run_dir, "STOPPING", "forced stop requested" if force else "stop requested")

    stopper = _Stopper(check, report)
    stopper.remember()
    done = False if force else stopper.graceful(timeout, term_timeout)
    if not done:
        stopper.kill_all(kill_timeout)
    stopper.kill_leftovers()
    report.group_gone = stopper.wait_all_gone(kill_timeout)

    _finish_if_supervisor_died(workspace, data, report)
    report.seconds = round(time.monotonic() - t0, 3)
    return report


class _Stopper:
    """The signals of one stop, sent only to verified processes and recorded in `report`."""

    def __init__(self, check: LockCheck, report: StopReport):
        self.check, self.report = check, report
        self.procs = list(check.procs.values())
        self.pgid = check.data.get("pgid")
        self.seen: dict[int, psutil.Process] = {}  # group members seen while a verified process lived

    def remember(self) -> None:
        """Note the group's members: a pgid is ours only while a verified member is alive."""
        if isinstance(self.pgid, int) and any(_running(p) for p in self.procs):
            for m in identity.group_members(self.pgid):
                self.seen.setdefault(m.pid, m)

    def all_gone(self) -> bool:
        return not any(_running(p) for p in self.procs)

    def send(self, role: str, sig: int) -> None:
        p = self.check.procs.get(role)
        if p is not None and _running(p) and identity.signal_verified(p, sig):
            self.report.sent.append(f"{identity.signal_name(sig)} to {role} (pid {p.pid})")

    def graceful(self, timeout: float, term_timeout: float) -> bool:
        """SIGINT to every trainer (they checkpoint), then SIGTERM; True when all are gone."""
        trainers = self.check.trainer_roles  # every process of a multi-process run gets the stop
        if trainers:
            for role in trainers:
                self.send(role, signal.SIGINT)
        else:  # the trainer is not started yet: the supervisor will not start it
            self.send("supervisor", signal.SIGTERM)
        done = _wait(self.all_gone, timeout, self.remember)
        if not done and any(_running(self.check.procs[r]) for r in trainers):
            for role in trainers:
                self.send(role, signal.SIGTERM)
            done = _wait(self.all_gone, term_timeout, self.remember)
        return done

    def kill_all(self, kill_timeout: float) -> None:
        """SIGKILL to the process group, or to each verified process when none vouches for it."""
        self.remember()
        pgid = self.pgid
        if isinstance(pgid, int) and identity.kill_group(pgid, self.procs):
            self.report.sent.append(f"SIGKILL to process group {pgid}")
        else:  # no verified member left to vouch for the group: kill what we saw, one by one
            for p in self.procs:
                send_kill = identity.signal_verified(p, signal.SIGKILL)
                if send_kill:
                    self.report.sent.append(f"SIGKILL to pid {p.pid}")
        # The group's other members were killed too, but a loaded machine takes a moment to
        # deliver it: wait for them as well, so only real leftovers are killed (and reported).
        _wait(lambda: self.all_gone() and not any(_running(m) and _in_group(m, pgid) for m in self.seen.values()),
              kill_timeout)

    def kill_leftovers(self) -> None:
        """Leftovers (e.g. a data loader the trainer forked) die with the run, never outlive it."""
        leftovers = [m for m in self.seen.values() if _running(m)]
        if leftovers:
            n = identity.kill_known(leftovers)
            if n:
                self.report.sent.append(f"SIGKILL to {n} leftover process(es) of group {self.pgid}")

    def wait_all_gone(self, kill_timeout: float) -> bool:
        return _wait(lambda: not any(_running(m) for m in [*self.procs, *self.seen.values()]), kill_timeout)


def _finish_if_supervisor_died(workspace: str, data: dict, report: StopReport) -> None:
    """The supervisor can die of our stop without writing its result: by the group kill (it
    is in the group), or by SIGTERM before its handler was installed. Write it for it."""
    run_dir, attempt = data["run_dir"], data.get("attempt")
    result, _ = read_result(run_dir)
    if result is None or result.get("attempt") != attempt:
        if not report.sent:
            return  # nothing we did explains it; the state will say ORPHANED
        if any("SIGKILL" in s for s in report.sent):
            write_result(run_dir, attempt, -signal.SIGKILL, data.get("started_at"), stopped=True,
                         trainer_pid=data.get("trainer_pid"),
                         override={"state": "ABORTED", "reason": "force-stopped: killed by SIGKILL"})
        else:
            started = data.get("trainer_pid") is not None
            write_result(run_dir, attempt, None, data.get("started_at"), stopped=True,
                         trainer_pid=data.get("trainer_pid"), override={
                             "state": "ABORTED", "reason": "stopped on request; its supervisor was gone, so "
                             "nobody recorded how the trainers ended"} if started else None)
    lockfile.clear_lock_if(workspace, lambda d: lockfile.names(d, run_dir, attempt))
