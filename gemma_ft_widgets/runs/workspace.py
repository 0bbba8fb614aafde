"""The workspace folder: list, resolve, create and delete run folders; read their logs,
metrics and config.

No lifecycle here (runs/manager.py starts and stops runs) and no state derivation
(runs/statuses.py): only what the folder holds. The one cache is the folder listing.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from typing import Any

from .. import contract
from .errors import RunError
from .lockfile import LockRead, read_lock
from .status import read_config

LOG_STREAMS = {"stdout": contract.STDOUT_NAME, "stderr": contract.STDERR_NAME,
               "status": contract.STATUS_LOG_NAME, "supervisor": contract.SUPERVISOR_LOG_NAME}
RELIST_S = 2.0  # see Workspace.listing_now
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def default_workspace() -> str:
    """The workspace named by the environment, else the default folder, as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get(contract.WORKSPACE_ENV) or contract.DEFAULT_WORKSPACE))


class Workspace:
    """One workspace folder and its run folders (a run is given as a Run, a name or a path)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path))) if path else default_workspace()
        self._listing: tuple[tuple, float, list[str]] | None = None
        self._mutex = threading.Lock()

    def need(self, writable: bool = False) -> None:
        """RunError unless the folder exists (and, `writable`, this process may write it)."""
        if not os.path.isdir(self.path):
            raise RunError(f"workspace {self.path} does not exist")
        if writable and not os.access(self.path, os.W_OK | os.X_OK):
            raise RunError(f"workspace {self.path} is not writable")

    def make(self) -> None:
        """Create the folder (not its parents) unless it exists; RunError unless writable."""
        if not os.path.isdir(self.path):
            parent = os.path.dirname(self.path)
            if not os.path.isdir(parent):
                raise RunError(f"cannot create workspace {self.path}: {parent} does not exist")
            try:
                os.mkdir(self.path)
            except FileExistsError:
                pass
            except OSError as e:
                raise RunError(f"cannot create workspace {self.path}: {e.strerror}") from e
        self.need(writable=True)

    # -- listing -------------------------------------------------------------------------------
    def run_dirs(self) -> list[str]:
        """Run folders, most recently active first."""
        return self.listing_now()[0]

    def listing_now(self) -> tuple[list[str], bool]:
        """(run folders, whether they were listed again just now). Run folders, most recently active first (status.log is appended at each transition).

        Cached while the workspace folder is unchanged: a run folder made or removed, and a lock
        created, replaced or removed (every start, resume and end), change its mtime. The order
        of runs that only appended to status.log meanwhile is refreshed every RELIST_S, and a
        folder changed less than a second ago is listed again."""
        try:
            st = os.stat(self.path)
            # Folder mtimes tick coarsely (a few ms): one that changed just now may change again
            # within the same tick, unseen. Only a listing taken after a quiet second is kept.
            key = (st.st_ino, st.st_mtime_ns) if time.time() - st.st_mtime > 1.0 else None
        except OSError:
            key = None
        now = time.monotonic()
        with self._mutex:
            if key is not None and self._listing and self._listing[0] == key and now - self._listing[1] < RELIST_S:
                return list(self._listing[2]), False
        dirs = self._list_run_dirs()
        with self._mutex:
            self._listing = (key, now, dirs) if key is not None else None
        return list(dirs), True

    def _list_run_dirs(self) -> list[str]:
        found = []
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        for name in names:
            path = os.path.join(self.path, name)
            if name.startswith(".") or not os.path.isdir(path):
                continue
            for marker in (contract.STATUS_LOG_NAME, contract.CONFIG_NAME):
                try:
                    found.append((os.stat(os.path.join(path, marker)).st_mtime, name, path))
                    break
                except OSError:
                    continue
        return [p for _, _, p in sorted(found, reverse=True)]

    # -- resolving -----------------------------------------------------------------------------
    def default_run(self, lock: LockRead) -> str | None:
        """The locked run's folder, else the newest run's (None: no runs)."""
        if lock.data:
            return lock.data["run_dir"]
        dirs = self.run_dirs()
        if lock.present:  # unreadable: pin it on the newest run that has not ended
            for d in dirs:
                if not os.path.exists(os.path.join(d, contract.RESULT_NAME)):
                    return d
        return dirs[0] if dirs else None

    def resolve(self, run: Any) -> str:
        """An existing run folder directly inside the workspace, from a Run, name or path."""
        raw = os.fspath(run)  # a Run is a path-like of its folder
        ws = os.path.realpath(self.path)
        if os.path.isabs(raw) or os.sep in raw:
            path = os.path.realpath(raw)
        else:
            path = os.path.realpath(os.path.join(ws, raw))
        if os.path.dirname(path) != ws or not os.path.isdir(path) or os.path.basename(path).startswith("."):
            raise RunError(f"unknown run {raw!r} in workspace {self.path}")
        return os.path.join(self.path, os.path.basename(path))

    def resolve_or_default(self, run: Any) -> str:
        """resolve(run); None: the active or newest run (RunError when there is none)."""
        self.need()
        if run is not None:
            return self.resolve(run)
        run_dir = self.default_run(read_lock(self.path))
        if run_dir is None:
            raise RunError(f"no runs in workspace {self.path}")
        return run_dir

    # -- reading a run's files -----------------------------------------------------------------
    def metrics(self, run: Any = None, since: int = 0) -> tuple[list[dict], int]:
        """(complete events appended after byte offset `since`, the new offset)."""
        tail = contract.JsonlTail(os.path.join(self.resolve_or_default(run), contract.METRICS_NAME), since)
        events = tail.read_new()
        return events, tail.offset

    def logs(self, run: Any = None, stream: str = "stderr", max_lines: int = 200) -> str:
        """The last `max_lines` of one of the run's LOG_STREAMS."""
        if stream not in LOG_STREAMS:
            raise RunError(f"unknown log stream {stream!r}; one of {', '.join(LOG_STREAMS)}")
        return contract.tail_text(os.path.join(self.resolve_or_default(run), LOG_STREAMS[stream]), max_lines)

    def run_config(self, run: Any = None) -> dict:
        """The run's config.json; RunError when it is missing or unreadable."""
        run_dir = self.resolve_or_default(run)
        cfg = read_config(run_dir)
        if cfg is None:
            raise RunError(f"{os.path.join(run_dir, contract.CONFIG_NAME)} is missing or unreadable")
        return cfg

    # -- creating and deleting -----------------------------------------------------------------
    def new_run_dir(self, prefix: str) -> str:
        """A free folder path `<prefix>-<date>-<time>[-k]` inside the workspace (not created)."""
        if not _SAFE_NAME.fullmatch(prefix):
            raise RunError(f"unsafe run name prefix {prefix!r}")
        base = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        name, k = base, 1
        while os.path.lexists(os.path.join(self.path, name)):
            k += 1
            name = f"{base}-{k}"
        path = os.path.join(self.path, name)
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.path):
            raise RunError(f"run folder {path} would be outside the workspace")
        return path

    @staticmethod
    def create_run_dir(run_dir: str) -> None:
        """Make the (empty) run folder; RunError when that fails."""
        try:
            os.mkdir(run_dir)
        except OSError as e:
            raise RunError(f"cannot create the run folder {run_dir}: {e}") from e

    @staticmethod
    def write_run_files(run_dir: str, config: dict, info: dict | None) -> None:
        """config.json, and run_info.json when `info` says anything (OSError as it comes)."""
        contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), config)
        if info and any(info.values()):
            contract.atomic_write_json(os.path.join(run_dir, contract.RUN_INFO_NAME), info)

    @staticmethod
    def remove_empty(path: str) -> None:
        """Remove a run folder that start() made and nothing was written to (never a real run)."""
        try:
            os.rmdir(path)
        except OSError:
            pass

    @staticmethod
    def delete_run_dir(run_dir: str) -> None:
        """Delete a run folder and everything in it (the caller checked it is not in use)."""
        shutil.rmtree(run_dir)


def safe_prefix(name: str) -> str:
    """A run name as a folder-name prefix (letters, digits, '.', '_', '-')."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not safe:
        raise RunError(f"run name {name!r} has no usable characters")
    return safe[:64]
