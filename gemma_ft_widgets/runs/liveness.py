"""Is a run folder in use? Found from the folder itself, not only from the workspace lock.

The workspace lock can be deleted by hand, by a sync tool or a cleanup script while its run
goes on. So each attempt also holds `<run>/.run.flock`: the supervisor opens it, takes an
exclusive flock() and hands the same descriptor to the trainer, so the flock lasts while any
of them lives (a flock belongs to the open file, shared by both). Reading it costs one open
and one non-blocking flock(), cheap enough for every status.

The processes themselves are found by a scan of the process table, by identity: a supervisor
whose command line is `-m gemma_ft_widgets.runs.supervisor RUN_DIR ...`, and a trainer whose
command line ends with RUN_DIR and that holds the run's flock file open or is the child of
that supervisor. The scan also works when the flock file itself was deleted.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any

import psutil

from .. import contract

SUPERVISOR_MODULE = "gemma_ft_widgets.runs.supervisor"


def flock_path(run_dir: str) -> str:
    """The run's `.run.flock` file, flock()ed while any of its processes lives."""
    return os.path.join(run_dir, contract.RUN_FLOCK_NAME)


def hold(run_dir: str) -> int:
    """Open and flock the run's file exclusively; returns the descriptor (the caller keeps it
    open, and passes it to its children, for as long as the run lives)."""
    fd = os.open(flock_path(run_dir), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits only for a checker's momentary shared lock
    return fd


def held(run_dir: str) -> bool:
    """Does a live process of this run hold its flock? False when there is no such file."""
    try:
        fd = os.open(flock_path(run_dir), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # releases our shared lock at once
    return False


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and os.path.realpath(a) == os.path.realpath(b)


def _holds_file(p: psutil.Process, path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    try:
        for f in p.open_files():
            try:
                fst = os.stat(f.path)
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                return True
    except psutil.Error:
        return False
    return False


def processes(run_dir: str) -> dict[str, psutil.Process]:
    """{"supervisor": p, "trainer": p} for the live processes of `run_dir` (either may be
    missing). Zombies and other users' processes are ignored."""
    found: dict[str, psutil.Process] = {}
    candidates = []
    for p in psutil.process_iter(["cmdline", "status", "ppid"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["status"] == psutil.STATUS_ZOMBIE or len(cmd) < 4 or cmd[1] != "-m":
                continue
            if cmd[2] == SUPERVISOR_MODULE and _same(cmd[3], run_dir):
                found.setdefault("supervisor", p)
            elif len(cmd) == 4 and _same(cmd[3], run_dir):
                candidates.append(p)
        except psutil.Error:
            continue
    sup = found.get("supervisor")
    path = flock_path(run_dir)
    for p in candidates:
        try:
            if (sup is not None and p.info["ppid"] == sup.pid) or _holds_file(p, path):
                found.setdefault("trainer", p)
        except psutil.Error:
            continue
    return found


def attempt_of(supervisor: psutil.Process) -> int | None:
    """The `--attempt K` a supervisor was started with."""
    try:
        cmd = supervisor.cmdline()
    except psutil.Error:
        return None
    for i, arg in enumerate(cmd[:-1]):
        if arg == "--attempt" and cmd[i + 1].isdigit():
            return int(cmd[i + 1])
    return None


def in_use(run_dir: str) -> bool:
    """The flock, then the process scan (the flock file may have been deleted too)."""
    return held(run_dir) or bool(processes(run_dir))
