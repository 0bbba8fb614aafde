"""The workspace lock `.training.lock`: exclusive creation, atomic updates, tolerant reads.

Every mutation happens while holding flock() on `.training.lock.guard`, so "is the old lock
stale? then clear it and create mine" is one step that two starters cannot interleave.
Readers do not take the guard, except to re-read a lock that looked torn.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .. import contract

LOCK_MODE = 0o644  # readable by tools, writable only by the owner
VERSION = 1


class LockRead(NamedTuple):
    """What reading the workspace lock found: whether it exists, its data, or why it is unreadable."""

    present: bool
    data: dict[str, Any] | None  # parsed and plausible
    error: str | None  # present but unreadable: why


def lock_path(workspace: str) -> str:
    """The workspace lock file's path."""
    return os.path.join(workspace, contract.LOCK_NAME)


@contextlib.contextmanager
def guard(workspace: str, shared: bool = False) -> Iterator[None]:
    """Hold flock() on the guard file (exclusive unless `shared`)."""
    path = os.path.join(workspace, contract.LOCK_GUARD_NAME)
    if shared:
        fd = os.open(path, os.O_RDONLY)  # a reader must not need write access
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, LOCK_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _parse(text: str) -> tuple[dict | None, str | None]:
    if not text.strip():
        return None, "empty file"
    try:
        data = json.loads(text)
    except ValueError as e:
        return None, f"not valid JSON: {e}"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    if not isinstance(data.get("run_dir"), str) or not data["run_dir"]:
        return None, "no run_dir"
    for key in ("supervisor_pid", "trainer_pid", "pgid"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return None, f"{key} is not an integer"
    return data, None


def _read_once(workspace: str) -> LockRead:
    try:
        with open(lock_path(workspace), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return LockRead(False, None, None)
    except OSError as e:
        return LockRead(True, None, f"cannot read: {e.strerror}")
    data, error = _parse(text)
    return LockRead(True, data, error)


def read_lock(workspace: str, *, locked: bool = False) -> LockRead:
    """Read the lock; never raises. `locked`: the caller already holds the guard."""
    result = _read_once(workspace)
    if result.error is None or locked:
        return result
    # Torn only while its creator holds the guard (create + write is two steps): wait for it.
    try:
        with guard(workspace, shared=True):
            return _read_once(workspace)
    except OSError:
        return result


def create_lock(workspace: str, data: dict[str, Any]) -> bool:
    """Create the lock exclusively (caller holds the guard). False if one exists already."""
    try:
        fd = os.open(lock_path(workspace), os.O_WRONLY | os.O_CREAT | os.O_EXCL, LOCK_MODE)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({"version": VERSION, **data}, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(lock_path(workspace))
        raise
    return True


def remove_lock(workspace: str) -> None:
    """Remove the lock (caller holds the guard and has checked it is the one to remove)."""
    try:
        os.unlink(lock_path(workspace))
    except FileNotFoundError:
        pass


def names(data: dict | None, run_dir: str, attempt: int | None = None) -> bool:
    """Does this lock belong to `run_dir` (and to that attempt, when given)?"""
    if not data or os.path.realpath(str(data.get("run_dir"))) != os.path.realpath(run_dir):
        return False
    return attempt is None or data.get("attempt") == attempt


def update_lock(workspace: str, match: Callable[[dict], bool], changes: dict[str, Any]) -> bool:
    """Merge `changes` into the lock if it still satisfies `match`. Atomic; takes the guard."""
    with guard(workspace):
        current = read_lock(workspace, locked=True)
        if current.data is None or not match(current.data):
            return False
        new = dict(current.data)
        for key, value in changes.items():
            if key == "create_times":  # merged, so the supervisor and the trainer both appear
                new[key] = {**(new.get(key) or {}), **value}
            else:
                new[key] = value
        contract.atomic_write_json(lock_path(workspace), new, mode=LOCK_MODE)
        return True


def clear_lock_if(workspace: str, match: Callable[[dict], bool]) -> bool:
    """Remove the lock if it still satisfies `match`. Takes the guard."""
    with guard(workspace):
        current = read_lock(workspace, locked=True)
        if current.data is None or not match(current.data):
            return False
        remove_lock(workspace)
        return True
