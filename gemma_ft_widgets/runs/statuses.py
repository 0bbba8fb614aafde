"""The runs of a workspace with their derived state, cached so a poll reads only what changed.

Every answer is derived again from the files and the process table (runs/status.py); the
caches only spare work: a metrics reader per run (a refresh reads only appended bytes), each
run's config and run_info.json, and the status of ended runs, which no longer change.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .. import contract
from .errors import RunError
from .lockfile import LockRead, names, read_lock
from .metrics import MetricsSummary
from .state import ACTIVE_STATES, ENDED_STATES, State
from .status import RunStatus, read_config, read_run_info, run_status
from .workspace import Workspace


class RunStatuses:
    """The status of each run in one Workspace. Safe to share between threads."""

    def __init__(self, folders: Workspace):
        self.folders = folders
        self._summaries: dict[str, MetricsSummary] = {}
        # Ended runs do not change: their status is kept, keyed by their result file's identity,
        # and the folder listing by the workspace folder's (see Workspace.listing_now and of).
        self._ended: dict[str, tuple[tuple, RunStatus]] = {}
        self._runs_cache: tuple | None = None  # (listing and lock, statuses, indices of runs not ended)
        self._configs: dict[str, dict | None] = {}
        self._infos: dict[str, dict] = {}
        self._mutex = threading.RLock()  # the caches, shared by UI and poller threads

    def status(self, run: Any = None, missing_ok: bool = False) -> RunStatus:
        """The locked run's status, else the newest run's; IDLE when there are none, and,
        `missing_ok`, when the workspace folder does not exist yet (else RunError)."""
        if missing_ok and run is None and not os.path.isdir(self.folders.path):
            return RunStatus(State.IDLE, reason="no runs in this workspace")
        self.folders.need()
        lock = read_lock(self.folders.path)
        if run is None:
            run_dir = self.folders.default_run(lock)
            if run_dir is None:
                if lock.present:  # an unreadable lock and no run folder to pin it on
                    return RunStatus(State.ORPHANED, reason=f"lock file unreadable ({lock.error})")
                return RunStatus(State.IDLE, reason="no runs in this workspace")
        else:
            run_dir = self.folders.resolve(run)
        return self.of(run_dir, lock)

    def runs(self, missing_ok: bool = False) -> list[RunStatus]:
        """Every run in the workspace with its state, most recently active first (`missing_ok`:
        none when the workspace folder does not exist yet, else RunError)."""
        if missing_ok and not os.path.isdir(self.folders.path):
            return []
        self.folders.need()
        ws = self.folders.path
        lock = read_lock(ws)
        dirs, relisted = self.folders.listing_now()
        if lock.data and lock.data["run_dir"] not in dirs and os.path.dirname(lock.data["run_dir"]) == ws:
            dirs.insert(0, lock.data["run_dir"])  # being created right now
        locked_dir = (lock.data or {}).get("run_dir")
        cached = self._runs_cache
        if relisted or lock.error or cached is None or cached[0] != (dirs, locked_dir):
            out = [self.of(d, lock) for d in dirs]
            live = [i for i, d in enumerate(dirs) if d == locked_dir or d not in self._ended]
            self._runs_cache = ((dirs, locked_dir), out, live)
            return out
        # The folder listing is unchanged since it was last checked (at most RELIST_S ago) and
        # the ended runs' result files were stat-checked then: a poll re-reads the others only.
        # With none, the same list comes back (callers read it, never change it).
        _, out, live = cached
        if not live:
            return out
        out = list(out)
        for i in live:
            out[i] = self.of(dirs[i], lock)
        return out

    def wait(self, run: Any = None, until: Any = None, timeout: float | None = None,
             interval: float = 0.25) -> RunStatus:
        """Poll the files until the run reaches `until`; return its status.

        `until`: None (the run is no longer STARTING/RUNNING/STOPPING), a state or its name,
        several states, or a predicate on RunStatus. Raises RunError when the run stopped being
        active without getting there (so waiting for RUNNING never hangs on a failed run), and
        TimeoutError after `timeout` seconds.
        """
        if until is None:
            done = lambda st: st.state not in ACTIVE_STATES  # noqa: E731
        elif callable(until) and not isinstance(until, (str, State)):
            done = until
        else:
            wanted = {State(u) for u in ([until] if isinstance(until, (str, State)) else until)}
            done = lambda st: st.state in wanted  # noqa: E731
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status(run)
            if done(st):
                return st
            if st.state not in ACTIVE_STATES and st.state is not State.IDLE:
                raise RunError(f"{st.run_name or 'the run'} is {st.state.value}"
                               + (f" ({st.reason})" if st.reason else "") + f"; it will not reach {until!r}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{st.run_name or 'the run'} still {st.state.value} after {timeout}s")
            time.sleep(interval)

    def of(self, run_dir: str, lock: LockRead) -> RunStatus:
        """The status of the run in `run_dir`, given the workspace lock as just read."""
        locked = bool(lock.data) and names(lock.data, run_dir)
        key = None if locked or lock.error else _result_key(run_dir)
        if key is not None:
            with self._mutex:
                hit = self._ended.get(run_dir)
            if hit is not None and hit[0] == key:
                return hit[1]  # shared: callers read a RunStatus, never change it
        st = self._compute(run_dir, lock)
        if key is not None and st.state in ENDED_STATES and not st.active:
            with self._mutex:
                self._ended[run_dir] = (key, st)
        return st

    def _compute(self, run_dir: str, lock: LockRead) -> RunStatus:
        with self._mutex:
            summary = self._summaries.get(run_dir)
            if summary is None:
                summary = self._summaries[run_dir] = MetricsSummary(run_dir)
            config = self._configs.get(run_dir)
            if config is None:
                config = read_config(run_dir)
                if config is not None:  # only cache what was there: it may be written right now
                    self._configs[run_dir] = config
            unreadable = lock.present and lock.data is None and run_dir == self.folders.default_run(lock)
            st = run_status(run_dir, lock, summary, config, lock_error=lock.error if unreadable else None)
            info = self._infos.get(run_dir)
            if not info and config is not None:  # written just after the config: keep looking until it is there
                info = read_run_info(run_dir)
                if info:
                    self._infos[run_dir] = info
            st.group, st.queue_id = (info or {}).get("group"), (info or {}).get("queue_id")
        if st.state == State.ORPHANED and st.attempt:
            # Nothing of an orphaned run is alive to say so: the first reader sends its webhook.
            from . import notify

            notify.spawn(run_dir, self.folders.path, st.attempt, config)
        return st

    def config_changed(self, run_dir: str) -> None:
        """The run's config.json was rewritten (a resume with a new max_steps): read it again."""
        with self._mutex:
            self._configs.pop(run_dir, None)

    def forget(self, run_dir: str) -> None:
        """Drop what is cached of a deleted run folder."""
        with self._mutex:
            self._summaries.pop(run_dir, None)
            self._configs.pop(run_dir, None)
            self._infos.pop(run_dir, None)
            self._ended.pop(run_dir, None)


def _result_key(run_dir: str) -> tuple | None:
    """The identity of a run's result.json (None when it has none): a resume renames it aside,
    a rewrite replaces it (atomic writes make a new inode)."""
    try:
        st = os.stat(os.path.join(run_dir, contract.RESULT_NAME))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
