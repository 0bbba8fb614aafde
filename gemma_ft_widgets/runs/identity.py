"""Machine and process identity, and signalling only what was verified to be ours.

A pid alone is never trusted: pids are reused. A process is ours only when pid, create time
and command line all match what the lock recorded; anything else is left alone.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
from collections.abc import Iterable
from typing import Any

import psutil

from .state import Proc

CREATE_TIME_TOLERANCE = 0.01  # seconds; see docs/ARCHITECTURE.md


@functools.lru_cache(maxsize=1)
def boot_id() -> str:
    """Changes on every reboot, so a lock from before a reboot is recognised."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            value = f.read().strip()
        if value:
            return value
    except OSError:
        pass
    return f"boot-time-{int(psutil.boot_time())}"


def hostname() -> str:
    """This machine's host name, as locks record it."""
    return socket.gethostname()


def describe(pid: int) -> dict[str, Any]:
    """{"pid", "create_time", "cmdline"} of a live process, as recorded in the lock."""
    p = psutil.Process(pid)
    with p.oneshot():
        return {"pid": pid, "create_time": p.create_time(), "cmdline": p.cmdline()}


def _verified(pid: Any, create_time: Any, cmdline: Any) -> tuple[Proc, psutil.Process | None]:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return Proc.NONE, None
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return Proc.GONE, None
            ctime = p.create_time()
            cmd = p.cmdline()
    except psutil.NoSuchProcess:
        return Proc.GONE, None
    except psutil.AccessDenied:  # another user's process cannot be ours
        return Proc.REUSED, None
    if not isinstance(create_time, (int, float)) or abs(ctime - create_time) > CREATE_TIME_TOLERANCE:
        return Proc.REUSED, None
    if cmdline is not None and list(cmd) != list(cmdline):
        return Proc.REUSED, None
    return Proc.ALIVE, p


def verify(pid: Any, create_time: Any, cmdline: Any) -> tuple[Proc, psutil.Process | None]:
    """`check()`, and the verified process when it is ALIVE."""
    return _verified(pid, create_time, cmdline)


def check(pid: Any, create_time: Any, cmdline: Any) -> Proc:
    """Is `pid` still the very process recorded (ALIVE), gone, or reused by another program?"""
    return _verified(pid, create_time, cmdline)[0]


def lock_process(lock: dict, role: str) -> tuple[Proc, psutil.Process | None]:
    """Verify the supervisor or the trainer recorded in a lock."""
    pid = lock.get(f"{role}_pid")
    times = lock.get("create_times") or {}
    ctime = times.get(str(pid)) if isinstance(times, dict) else None
    cmd_key = "cmdline" if role == "supervisor" else "trainer_cmdline"
    cmdline = lock.get(cmd_key)
    if not isinstance(cmdline, list):  # a lock without a command line cannot be verified
        return (Proc.NONE, None) if pid is None else (Proc.REUSED, None)
    return _verified(pid, ctime, cmdline)


def lock_peers(lock: dict) -> dict[int, tuple[Proc, psutil.Process | None]]:
    """Verify processes 1.. of a multi-process run, as the lock's `trainers` list names them."""
    out = {}
    for entry in lock.get("trainers") or []:
        if isinstance(entry, dict) and isinstance(entry.get("process"), int) and entry["process"] > 0:
            out[entry["process"]] = _verified(entry.get("pid"), entry.get("create_time"), entry.get("cmdline"))
    return out


def launcher_process(lock: dict) -> Proc:
    """Verify the launcher process the lock records (NONE when it records none)."""
    launcher = lock.get("launcher")
    if not isinstance(launcher, dict):
        return Proc.NONE
    return check(launcher.get("pid"), launcher.get("create_time"), launcher.get("cmdline"))


def signal_verified(proc: psutil.Process, sig: int) -> bool:
    """Send `sig` to a process verified earlier; False if it is gone since.

    psutil checks the create time again right before kill(2), so a pid reused in the
    meantime is not hit.
    """
    try:
        if not proc.is_running():  # compares the create time: False if the pid was reused
            return False
        proc.send_signal(sig)
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a live member (another user's group counts too)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but someone else's: decide from the members we can see
    return bool(group_members(pgid))


def kill_group(pgid: int, verified: Iterable[psutil.Process], sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group, but only if a verified process of ours leads or is in it.

    A pgid cannot be reused while any member lives, so a verified member proves the group is
    ours at the moment of the call.
    """
    for p in verified:
        try:
            if p.is_running() and os.getpgid(p.pid) == pgid:
                os.killpg(pgid, sig)
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def kill_known(members: Iterable[psutil.Process], sig: int = signal.SIGKILL) -> int:
    """Signal leftovers seen earlier in our group (each re-checked by create time)."""
    n = 0
    for p in members:
        n += signal_verified(p, sig)
    return n


SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def signal_name(signum: int) -> str:
    """A signal's name, e.g. "SIGKILL", for messages; "signal N" for one not in SIGNAL_NAMES."""
    return SIGNAL_NAMES.get(signum, f"signal {signum}")
