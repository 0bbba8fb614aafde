"""RunManager: start, watch, stop, resume, clean and delete runs in one workspace.

Nothing here keeps state that matters: every answer is derived again from the workspace and
the process table, so any kernel or terminal can manage a run another one started. The only
in-memory state is a cache of metrics readers (so a refresh reads only appended bytes) and
the handles of supervisors this process launched (only to reap them, never to decide).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from .. import contract
from . import identity, liveness, lockfile, sampling, warm_sampler
from .errors import RunError
from .launch import package_env
from .lockfile import LockRead
from .metrics import MetricsSummary
from .state import ACTIVE_STATES, ENDED_STATES, Proc, State
from .status import RunStatus, check_lock, read_config, read_result, read_run_info, run_status
from .stopping import StopReport, stop_processes

SUPERVISOR_MODULE = "gemma_ft_widgets.runs.supervisor"
LOG_STREAMS = {"stdout": contract.STDOUT_NAME, "stderr": contract.STDERR_NAME,
               "status": contract.STATUS_LOG_NAME, "supervisor": contract.SUPERVISOR_LOG_NAME}
RELIST_S = 2.0  # see RunManager._listing_now
ENDING_GRACE_S = 15.0  # how long an ended run's supervisor may take to let go of its lock and flock
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def default_workspace() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get(contract.WORKSPACE_ENV) or contract.DEFAULT_WORKSPACE))


class Run:
    """A handle on one run folder. Holds no state: every call asks the workspace."""

    def __init__(self, manager: RunManager, run_dir: str):
        self.manager, self.run_dir = manager, run_dir

    @property
    def name(self) -> str:
        return os.path.basename(self.run_dir)

    def status(self) -> RunStatus:
        return self.manager.status(self)

    def metrics(self, since: int = 0) -> tuple[list[dict], int]:
        return self.manager.metrics(self, since)

    def logs(self, stream: str = "stderr", max_lines: int = 200) -> str:
        return self.manager.logs(self, stream, max_lines)

    def wait(self, until: Any = None, timeout: float | None = None) -> RunStatus:
        """Wait for this run (see RunManager.wait)."""
        return self.manager.wait(self, until=until, timeout=timeout)

    def stop(self, **kwargs) -> StopReport:
        """Stop this run if it is the active one (see RunManager.stop)."""
        st = self.status()
        if not st.active:
            return StopReport(self.run_dir, nothing_to_stop=True, state=st.state, reason=st.reason,
                              message=f"nothing to stop: {self.name} is {st.state.value}")
        return self.manager.stop(**kwargs)

    def __fspath__(self) -> str:
        return self.run_dir

    def __repr__(self) -> str:
        return f"Run({self.run_dir!r})"


class RunManager:
    def __init__(self, workspace: str | os.PathLike | None = None, trainer: str | None = None):
        self.workspace = (os.path.abspath(os.path.expanduser(os.fspath(workspace)))
                          if workspace else default_workspace())
        self.trainer = trainer or os.environ.get(contract.TRAINER_ENV) or contract.DEFAULT_TRAINER
        self._summaries: dict[str, MetricsSummary] = {}
        # Ended runs do not change: their status is kept, keyed by their result file's identity,
        # and the folder listing by the workspace folder's (see _run_dirs and _status_of).
        self._ended: dict[str, tuple[tuple, RunStatus]] = {}
        self._listing: tuple[tuple, float, list[str]] | None = None
        self._runs_cache: tuple | None = None  # (listing and lock, statuses, indices of runs not ended)
        self._configs: dict[str, dict | None] = {}
        self._infos: dict[str, dict] = {}
        self._read_mutex = threading.RLock()  # the metrics cache, shared by UI and poller threads
        self._write_mutex = threading.RLock()  # start / resume / clean / delete from several threads
        self._stop_mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"RunManager({self.workspace!r}, trainer={self.trainer!r})"

    # -- reading ---------------------------------------------------------------------------
    def status(self, run: Any = None) -> RunStatus:
        """The locked run's status, else the newest run's; IDLE when there are none."""
        self._need_workspace()
        lock = lockfile.read_lock(self.workspace)
        if run is None:
            run_dir = self._default_run(lock)
            if run_dir is None:
                if lock.present:  # an unreadable lock and no run folder to pin it on
                    return RunStatus(State.ORPHANED, reason=f"lock file unreadable ({lock.error})")
                return RunStatus(State.IDLE, reason="no runs in this workspace")
        else:
            run_dir = self._resolve(run)
        return self._status_of(run_dir, lock)

    def runs(self) -> list[RunStatus]:
        """Every run in the workspace with its state, most recently active first."""
        self._need_workspace()
        lock = lockfile.read_lock(self.workspace)
        dirs, relisted = self._listing_now()
        if lock.data and lock.data["run_dir"] not in dirs and os.path.dirname(lock.data["run_dir"]) == self.workspace:
            dirs.insert(0, lock.data["run_dir"])  # being created right now
        locked_dir = (lock.data or {}).get("run_dir")
        cached = self._runs_cache
        if relisted or lock.error or cached is None or cached[0] != (dirs, locked_dir):
            out = [self._status_of(d, lock) for d in dirs]
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
            out[i] = self._status_of(dirs[i], lock)
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

    def metrics(self, run: Any = None, since: int = 0) -> tuple[list[dict], int]:
        """(complete events appended after byte offset `since`, the new offset)."""
        tail = contract.JsonlTail(os.path.join(self._resolve_or_default(run), contract.METRICS_NAME), since)
        events = tail.read_new()
        return events, tail.offset

    def logs(self, run: Any = None, stream: str = "stderr", max_lines: int = 200) -> str:
        if stream not in LOG_STREAMS:
            raise RunError(f"unknown log stream {stream!r}; one of {', '.join(LOG_STREAMS)}")
        return contract.tail_text(os.path.join(self._resolve_or_default(run), LOG_STREAMS[stream]), max_lines)

    def resolve(self, run: Any = None) -> str:
        """The folder of a run given as a Run, a name or a path (None: the active or newest run)."""
        return self._resolve_or_default(run)

    def run_config(self, run: Any = None) -> dict:
        run_dir = self._resolve_or_default(run)
        cfg = read_config(run_dir)
        if cfg is None:
            raise RunError(f"{os.path.join(run_dir, contract.CONFIG_NAME)} is missing or unreadable")
        return cfg

    # -- starting --------------------------------------------------------------------------
    @property
    def queue(self):
        """This workspace's run queue (runs/queue.py): add, list, remove, clear, pause, resume."""
        from .queue import RunQueue

        return RunQueue(self)

    def lock_present(self) -> bool:
        return lockfile.read_lock(self.workspace).present

    def refuse_what_cannot_start(self, config) -> None:
        """ConfigError for a validated config that start would refuse before creating anything:
        it cannot fit this machine, or max_seq_len leaves nothing to train (the queue checks
        this when an entry is added, not only when it starts)."""
        _refuse_what_cannot_fit(config)

    def start(self, config: Any, name: str | None = None, group: str | None = None,
              queue_id: str | None = None, start_anyway: bool = False) -> Run:
        """Validate `config` (TrainingConfig or dict), then create the run folder and the lock
        exclusively and launch the detached supervisor. Raises ConfigError before creating
        anything, RunError when a run is active. `name` prefixes the folder's name; `group`
        (a sweep's) and `queue_id` are recorded in run_info.json. `start_anyway`: the user
        was told that the estimate does not fit this machine and starts it regardless; status.log
        says so (the form's "Start anyway", fit.py)."""
        from ..config import TrainingConfig

        cfg = config if isinstance(config, TrainingConfig) else TrainingConfig.from_dict(config)
        _refuse_what_cannot_fit(cfg, check_memory=not start_anyway)
        self._make_workspace()
        prefix = _safe_prefix(name) if name else cfg.run_name_prefix()
        with self._write_mutex:
            self._wait_for_ending_run()
            with lockfile.guard(self.workspace):
                lock = lockfile.read_lock(self.workspace, locked=True)
                self._clear_stale_or_raise(lock, "a new start")
                self._refuse_unlocked_live_runs(lock)
                run_dir = self._new_run_dir(prefix)
                # The folder first: a poller that reads the lock must find the folder it names.
                # Empty, it is not listed as a run until the lock names it.
                try:
                    os.mkdir(run_dir)
                except OSError as e:
                    raise RunError(f"cannot create the run folder {run_dir}: {e}") from e
                if not lockfile.create_lock(self.workspace, self._lock_data(run_dir, 1)):
                    _remove_empty(run_dir)
                    raise RunError("another run was started at the same moment")  # unguarded writer
                try:
                    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg.to_dict())
                    if name or group or queue_id:
                        contract.atomic_write_json(os.path.join(run_dir, contract.RUN_INFO_NAME),
                                                   {"name": name, "group": group, "queue_id": queue_id})
                except OSError as e:
                    lockfile.remove_lock(self.workspace)
                    _remove_empty(run_dir)
                    raise RunError(f"cannot create the run folder {run_dir}: {e}") from e
            if start_anyway:
                from ..fit import start_anyway_note

                contract.append_status(run_dir, "STARTING", start_anyway_note(cfg))
            self._launch(run_dir, 1)
        return Run(self, run_dir)

    def resume(self, run: Any = None, checkpoint: Any = None, max_steps: int | None = None) -> Run:
        """Restart an ORPHANED or ABORTED run (or a FAILED one with a checkpoint) in the same
        folder from its newest checkpoint that restores; the trainer appends to its metrics.
        `checkpoint` (N or "step_N"): resume from that one; newer ones are set aside (renamed
        step_M.set-aside-<attempt>, kept), so the trainer finds it newest. `max_steps`: train
        on to that step, also a FINISHED run, with its optimizer state; the cosine schedule
        keeps its end, and the learning rate holds at its final value for the extra steps."""
        self._need_workspace(writable=True)
        with self._write_mutex:
            self._wait_for_ending_run()
            with lockfile.guard(self.workspace):
                lock = lockfile.read_lock(self.workspace, locked=True)
                if run is None:
                    run = self._default_run(lock)
                    if run is None:
                        raise RunError(f"nothing to resume: no runs in {self.workspace}")
                run_dir = self._resolve(run)  # also refuses a lock naming a folder elsewhere
                st = self._status_of(run_dir, lock)
                extend = (max_steps is not None and st.state == State.FINISHED and bool(st.checkpoints)
                          and not st.active and st.foreign_host is None)
                if not st.can_resume and not extend:
                    raise RunError(self._why_not_resumable(st))
                self._refuse_if_in_use(run_dir, "resume")
                if lock.present:
                    self._clear_stale_or_raise(lock, "resume")
                wanted = _checkpoint_step(checkpoint, st.checkpoints, st.run_name) if checkpoint is not None else None
                _refuse_other_process_count(run_dir, wanted if wanted is not None else
                                            (st.checkpoints[-1] if st.checkpoints else None))
                extended = self._extend(run_dir, st, max_steps) if max_steps is not None else ""
                attempt = self._set_aside_result(run_dir, st.attempt)
                if wanted is not None:
                    for newer in [s for s in st.checkpoints if s > wanted]:
                        os.rename(contract.checkpoint_path(run_dir, newer),
                                  contract.checkpoint_path(run_dir, newer) + f".set-aside-{attempt}")
                from . import scheduled

                on_slurm = scheduled.scheduler_of(run_dir) is not None  # Slurm or Kubernetes: a new job
                lockfile.create_lock(self.workspace, scheduled.resume_lock(self, run_dir, attempt) if on_slurm
                                     else self._lock_data(run_dir, attempt))
            ckpt = wanted if wanted is not None else (st.checkpoints[-1] if st.checkpoints else None)
            contract.append_status(run_dir, "STARTING", f"resume: attempt {attempt} from "
                                   + (f"checkpoint step {ckpt}" if ckpt else "step 0 (no checkpoint)") + extended)
            if on_slurm:
                scheduled.resubmit(self, run_dir, attempt)
            else:
                self._launch(run_dir, attempt)
        return Run(self, run_dir)

    # -- stopping and cleaning -------------------------------------------------------------
    def stop(self, force: bool = False, timeout: float = 30.0, term_timeout: float = 5.0,
             kill_timeout: float = 10.0) -> StopReport:
        """Stop the active run: SIGINT to the trainer, after `timeout` s SIGTERM, after
        `term_timeout` s SIGKILL to the process group (`force`: the group kill at once).
        Returns when the group is gone. Safe to call from any thread: a second graceful stop
        waits for the first (then finds nothing to stop); a forced stop never waits."""
        self._need_workspace(writable=True)
        acquired = self._stop_mutex.acquire(blocking=not force)
        try:
            return self._stop(force, timeout, term_timeout, kill_timeout)
        finally:
            if acquired:
                self._stop_mutex.release()

    def _stop(self, force: bool, timeout: float, term_timeout: float, kill_timeout: float) -> StopReport:
        lock = lockfile.read_lock(self.workspace)
        if not lock.present:  # a live run whose lock was deleted is stopped through a restored one
            for run_dir in self._unlocked_live_runs(lock):
                try:
                    self.restore_lock(run_dir)
                except RunError:
                    continue
                lock = lockfile.read_lock(self.workspace)
                break
        if lock.data is None:
            msg = "nothing to stop: no active run" if not lock.present else \
                f"nothing to stop: the lock file is unreadable ({lock.error}); clear it with `gemma-ft clean`"
            st = self.status()
            return StopReport(None, nothing_to_stop=True, state=st.state, reason=st.reason, message=msg)
        if lock.data.get("scheduler"):  # its trainers are the scheduler's: stopped through it
            from .scheduled import stop_job

            report = stop_job(self.workspace, lock.data, force, timeout)
            st = self.status(report.run_dir)
            report.state, report.reason = st.state, st.reason
            report.message = report.message or (f"stopped {st.run_name} in {report.seconds:.1f} s ("
                                                f"{', '.join(report.sent)}); now {st.state.value}: {st.reason}")
            return report
        check = check_lock(lock.data)
        deadline = time.monotonic() + 5.0
        while not check.procs and check.launcher == Proc.ALIVE and time.monotonic() < deadline:
            time.sleep(0.05)  # a start is launching the supervisor right now
            lock = lockfile.read_lock(self.workspace)
            if lock.data is None:
                break
            check = check_lock(lock.data)
        run_dir = lock.data["run_dir"] if lock.data else check.data["run_dir"]
        name = os.path.basename(run_dir)
        if check.foreign:
            raise RunError(f"run {name} is active on host {check.data.get('hostname')}; "
                           "it cannot be verified or stopped from here")
        if not check.procs:
            st = self.status(run_dir)
            return StopReport(run_dir, nothing_to_stop=True, state=st.state, reason=st.reason,
                              message=f"nothing to stop: the processes of {name} are already gone "
                                      f"({st.state.value}: {st.reason})")
        report = stop_processes(self.workspace, check, force, timeout, term_timeout, kill_timeout)
        st = self.status(run_dir)
        report.state, report.reason = st.state, st.reason
        report.message = (f"stopped {name} in {report.seconds:.1f} s ({', '.join(report.sent) or 'no signal needed'}); "
                          f"now {st.state.value}" + (f": {st.reason}" if st.reason else "")
                          + ("" if report.group_gone else "; WARNING: some processes of the group remain"))
        return report

    def restore_lock(self, run: Any = None) -> str:
        """Write the workspace lock again for a live run whose lock was deleted, from the
        processes found by identity (runs/liveness.py). None: the first such run."""
        self._need_workspace(writable=True)
        with self._write_mutex, lockfile.guard(self.workspace):
            lock = lockfile.read_lock(self.workspace, locked=True)
            if run is None:
                live = self._unlocked_live_runs(lock)
                if not live:
                    raise RunError(f"nothing to restore: no run in {self.workspace} is alive without its lock")
                run_dir = live[0]
            else:
                run_dir = self._resolve(run)
            name = os.path.basename(run_dir)
            if lock.data and lockfile.names(lock.data, run_dir):
                raise RunError(f"nothing to restore: the lock of {name} is in place")
            if lock.present:
                self._clear_stale_or_raise(lock, "restore-lock")
            procs = liveness.processes(run_dir)
            if not procs:
                raise RunError(f"nothing to restore: no process of {name} is alive")
            data = self._lock_data(run_dir, 1)
            data["launcher"] = None
            sup, trainer = procs.get("supervisor"), procs.get("trainer")
            try:
                for role, p in (("supervisor", sup), ("trainer", trainer)):
                    if p is None:
                        continue
                    who = identity.describe(p.pid)
                    data[f"{role}_pid"] = p.pid
                    data["cmdline" if role == "supervisor" else "trainer_cmdline"] = who["cmdline"]
                    data["create_times"][str(p.pid)] = who["create_time"]
                data["pgid"] = os.getpgid((sup or trainer).pid)
                data["started_at"] = _iso_time((sup or trainer).create_time())
            except (psutil.Error, ProcessLookupError) as e:
                raise RunError(f"cannot restore the lock of {name}: its processes ended meanwhile ({e})") from e
            summary = MetricsSummary(run_dir).refresh()
            data["attempt"] = ((liveness.attempt_of(sup) if sup else None)
                               or (summary.last_start or {}).get("attempt") or 1)
            if trainer is not None:
                cmd = data["trainer_cmdline"]
                data["trainer_module"] = cmd[2] if len(cmd) > 2 else self.trainer
            lockfile.create_lock(self.workspace, data)
            contract.append_status(run_dir, "RUNNING", "workspace lock restored (it had been deleted while "
                                   "the run went on)")
        pids = ", ".join(f"{r} pid {p.pid}" for r, p in procs.items())
        return f"restored the lock of {name} ({pids})"

    def _unlocked_live_runs(self, lock: LockRead) -> list[str]:
        """Run folders whose processes live although the lock does not name them."""
        return [d for d in self._run_dirs()
                if not (lock.data and lockfile.names(lock.data, d)) and liveness.held(d)]

    def _refuse_unlocked_live_runs(self, lock: LockRead) -> None:
        for run_dir in self._unlocked_live_runs(lock):
            name = os.path.basename(run_dir)
            raise RunError(f"a run is already active: {name} (its workspace lock is missing, but its processes "
                           f"are alive). Stop it with `gemma-ft stop --workspace {self.workspace}`, or restore "
                           f"its lock with `gemma-ft restore-lock {name}`")

    def _refuse_if_in_use(self, run_dir: str, what: str) -> None:
        """Refuse to `what` a folder any process of the run still uses (the lock may be gone)."""
        procs = liveness.processes(run_dir)
        if "trainer" not in procs and read_result(run_dir)[0] is not None:
            procs = {}  # only the supervisor, finishing up after writing the result
        if not procs:
            # No live process of the run, but one that is ending may still hold its flock for a
            # moment: the supervisor after its result, a trainer SIGKILLed with its group just
            # now (an orphan verdict comes when the supervisor is gone). Wait, as for the lock.
            deadline = time.monotonic() + ENDING_GRACE_S
            while liveness.held(run_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
        if procs or liveness.held(run_dir):
            pids = ", ".join(f"{r} pid {p.pid}" for r, p in procs.items()) or "a process holds its flock"
            raise RunError(f"cannot {what} {os.path.basename(run_dir)}: its processes are alive ({pids}); "
                           f"stop it first with `gemma-ft stop --workspace {self.workspace}`")

    def clean(self, force: bool = False) -> str:
        """Clear the lock of an ORPHANED run, keeping every file. `force` also clears a lock
        held by another host (when you know that host is gone)."""
        self._need_workspace(writable=True)
        with self._write_mutex, lockfile.guard(self.workspace):
            lock = lockfile.read_lock(self.workspace, locked=True)
            if not lock.present:
                raise RunError(f"nothing to clean: no lock in {self.workspace}")
            if lock.data is None:
                lockfile.remove_lock(self.workspace)
                return f"cleared an unreadable lock ({lock.error}); all run folders are kept"
            run_dir = lock.data["run_dir"]
            name = os.path.basename(run_dir)
            check = check_lock(lock.data)
            if check.foreign and not force:
                raise RunError(f"the lock belongs to run {name} on host {lock.data.get('hostname')}, which may "
                               "still be training; if that host is gone, use `gemma-ft clean --force`")
            if not check.foreign and not check.stale:
                raise RunError(f"run {name} is active; stop it first with `gemma-ft stop --workspace {self.workspace}`")
            lockfile.remove_lock(self.workspace)
            if os.path.isdir(run_dir):
                contract.append_status(run_dir, "ORPHANED", "lock cleared by clean" + (" --force" if force else ""))
        message = f"cleared the lock of {name}; every file is kept. Resume it with `gemma-ft resume {name}`"
        started = self.queue.advance()  # the orphan no longer blocks the queue
        return message + (f"; the queue started {started.name}" if started is not None else "")

    def delete(self, run: Any) -> str:
        """Delete a run folder and everything in it. Refused while the run is active."""
        self._need_workspace(writable=True)
        if run is None:
            raise RunError("say which run to delete")
        run_dir = self._resolve(run)
        with self._write_mutex, lockfile.guard(self.workspace):
            lock = lockfile.read_lock(self.workspace, locked=True)
            if lock.data and lockfile.names(lock.data, run_dir):
                check = check_lock(lock.data)
                if check.foreign or not check.stale:
                    raise RunError(f"run {os.path.basename(run_dir)} is active; stop it before deleting it")
                lockfile.remove_lock(self.workspace)
            self._refuse_if_in_use(run_dir, "delete")
            shutil.rmtree(run_dir)
        with self._read_mutex:
            self._summaries.pop(run_dir, None)
            self._configs.pop(run_dir, None)
            self._infos.pop(run_dir, None)
            self._ended.pop(run_dir, None)
        return f"deleted {run_dir}"

    # -- sampling and export (subprocesses; jax never loads in this process) ---------------
    def sample(self, run: Any, prompt: str, max_new_tokens: int = 64, checkpoint: Any = None,
               timeout: float = 300, on_progress=None) -> dict:
        """Greedy sampling from a checkpoint, in a subprocess (jax never loads here);
        `on_progress(phase)` hears its phases."""
        return sampling.sample(self._resolve_or_default(run), prompt, max_new_tokens, checkpoint, timeout,
                               on_progress=on_progress)

    def export(self, run: Any, out_dir: str, timeout: float | None = None, format: str = "gemma",
               checkpoint: Any = None, dtype: str | None = None, on_progress=None) -> str:
        """Export a checkpoint (newest by default) to `out_dir`, in a subprocess: format "gemma"
        (orbax), "hf" (transformers), "peft" (adapter) or "gguf" (llama.cpp / Ollama). Returns
        the exporter's stdout: the folder, then the command that loads it. See docs/export.md."""
        return sampling.export(self._resolve_or_default(run), out_dir, timeout, format=format,
                               checkpoint=checkpoint, dtype=dtype, on_progress=on_progress)

    # -- internals -------------------------------------------------------------------------
    def _need_workspace(self, writable: bool = False) -> None:
        if not os.path.isdir(self.workspace):
            raise RunError(f"workspace {self.workspace} does not exist")
        if writable and not os.access(self.workspace, os.W_OK | os.X_OK):
            raise RunError(f"workspace {self.workspace} is not writable")

    def _make_workspace(self) -> None:
        if not os.path.isdir(self.workspace):
            parent = os.path.dirname(self.workspace)
            if not os.path.isdir(parent):
                raise RunError(f"cannot create workspace {self.workspace}: {parent} does not exist")
            try:
                os.mkdir(self.workspace)
            except FileExistsError:
                pass
            except OSError as e:
                raise RunError(f"cannot create workspace {self.workspace}: {e.strerror}") from e
        self._need_workspace(writable=True)

    def _run_dirs(self) -> list[str]:
        return self._listing_now()[0]

    def _listing_now(self) -> tuple[list[str], bool]:
        """(run folders, whether they were listed again just now). Run folders, most recently active first (status.log is appended at each transition).

        Cached while the workspace folder is unchanged: a run folder made or removed, and a lock
        created, replaced or removed (every start, resume and end), change its mtime. The order
        of runs that only appended to status.log meanwhile is refreshed every RELIST_S, and a
        folder changed less than a second ago is listed again."""
        try:
            st = os.stat(self.workspace)
            # Folder mtimes tick coarsely (a few ms): one that changed just now may change again
            # within the same tick, unseen. Only a listing taken after a quiet second is kept.
            key = (st.st_ino, st.st_mtime_ns) if time.time() - st.st_mtime > 1.0 else None
        except OSError:
            key = None
        now = time.monotonic()
        with self._read_mutex:
            if key is not None and self._listing and self._listing[0] == key and now - self._listing[1] < RELIST_S:
                return list(self._listing[2]), False
        dirs = self._list_run_dirs()
        with self._read_mutex:
            self._listing = (key, now, dirs) if key is not None else None
        return list(dirs), True

    def _list_run_dirs(self) -> list[str]:
        found = []
        try:
            names = os.listdir(self.workspace)
        except OSError:
            return []
        for name in names:
            path = os.path.join(self.workspace, name)
            if name.startswith(".") or not os.path.isdir(path):
                continue
            for marker in (contract.STATUS_LOG_NAME, contract.CONFIG_NAME):
                try:
                    found.append((os.stat(os.path.join(path, marker)).st_mtime, name, path))
                    break
                except OSError:
                    continue
        return [p for _, _, p in sorted(found, reverse=True)]

    def _default_run(self, lock: LockRead) -> str | None:
        if lock.data:
            return lock.data["run_dir"]
        dirs = self._run_dirs()
        if lock.present:  # unreadable: pin it on the newest run that has not ended
            for d in dirs:
                if not os.path.exists(os.path.join(d, contract.RESULT_NAME)):
                    return d
        return dirs[0] if dirs else None

    def _resolve(self, run: Any) -> str:
        """An existing run folder directly inside the workspace, from a Run, name or path."""
        raw = run.run_dir if isinstance(run, Run) else os.fspath(run)
        ws = os.path.realpath(self.workspace)
        if os.path.isabs(raw) or os.sep in raw:
            path = os.path.realpath(raw)
        else:
            path = os.path.realpath(os.path.join(ws, raw))
        if os.path.dirname(path) != ws or not os.path.isdir(path) or os.path.basename(path).startswith("."):
            raise RunError(f"unknown run {raw!r} in workspace {self.workspace}")
        return os.path.join(self.workspace, os.path.basename(path))

    def _resolve_or_default(self, run: Any) -> str:
        self._need_workspace()
        if run is not None:
            return self._resolve(run)
        run_dir = self._default_run(lockfile.read_lock(self.workspace))
        if run_dir is None:
            raise RunError(f"no runs in workspace {self.workspace}")
        return run_dir

    def _status_of(self, run_dir: str, lock: LockRead) -> RunStatus:
        locked = bool(lock.data) and lockfile.names(lock.data, run_dir)
        key = None if locked or lock.error else _result_key(run_dir)
        if key is not None:
            with self._read_mutex:
                hit = self._ended.get(run_dir)
            if hit is not None and hit[0] == key:
                return hit[1]  # shared: callers read a RunStatus, never change it
        st = self._compute_status(run_dir, lock)
        if key is not None and st.state in ENDED_STATES and not st.active:
            with self._read_mutex:
                self._ended[run_dir] = (key, st)
        return st

    def _compute_status(self, run_dir: str, lock: LockRead) -> RunStatus:
        with self._read_mutex:
            summary = self._summaries.get(run_dir)
            if summary is None:
                summary = self._summaries[run_dir] = MetricsSummary(run_dir)
            config = self._configs.get(run_dir)
            if config is None:
                config = read_config(run_dir)
                if config is not None:  # only cache what was there: it may be written right now
                    self._configs[run_dir] = config
            lock_error = lock.error if lock.present and lock.data is None and run_dir == self._default_run(lock) else None
            st = run_status(run_dir, lock, summary, config, lock_error=lock_error)
            info = self._infos.get(run_dir)
            if not info and config is not None:  # written just after the config: keep looking until it is there
                info = read_run_info(run_dir)
                if info:
                    self._infos[run_dir] = info
            st.group, st.queue_id = (info or {}).get("group"), (info or {}).get("queue_id")
        if st.state == State.ORPHANED and st.attempt:
            # Nothing of an orphaned run is alive to say so: the first reader sends its webhook.
            from . import notify

            notify.spawn(run_dir, self.workspace, st.attempt, config)
        return st

    def _new_run_dir(self, prefix: str) -> str:
        if not _SAFE_NAME.fullmatch(prefix):
            raise RunError(f"unsafe run name prefix {prefix!r}")
        base = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        name, k = base, 1
        while os.path.lexists(os.path.join(self.workspace, name)):
            k += 1
            name = f"{base}-{k}"
        path = os.path.join(self.workspace, name)
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.workspace):
            raise RunError(f"run folder {path} would be outside the workspace")
        return path

    def _lock_data(self, run_dir: str, attempt: int) -> dict[str, Any]:
        return {
            "run_dir": run_dir, "supervisor_pid": None, "trainer_pid": None, "pgid": None,
            "create_times": {}, "cmdline": None, "trainer_cmdline": None,
            "hostname": identity.hostname(), "boot_id": identity.boot_id(),
            "started_at": contract.utc_now(), "attempt": attempt, "trainer_module": self.trainer,
            "launcher": identity.describe(os.getpid()),  # vouches for the lock until the supervisor runs
        }

    def _launch(self, run_dir: str, attempt: int) -> None:
        warm_sampler.end_all(self.workspace)  # the playground's warm samplers give the accelerator back
        cmd = [sys.executable, "-m", SUPERVISOR_MODULE, run_dir, "--workspace", self.workspace,
               "--trainer", self.trainer, "--attempt", str(attempt)]
        mine = lambda d: lockfile.names(d, run_dir, attempt)
        if attempt == 1:
            contract.append_status(run_dir, "STARTING", "launching the supervisor")
        try:
            with open(os.path.join(run_dir, contract.SUPERVISOR_LOG_NAME), "ab") as log:
                # A new session: no kernel restart, closed terminal or Ctrl+C reaches the run.
                proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, env=package_env())
        except OSError as e:
            lockfile.clear_lock_if(self.workspace, mine)
            contract.append_status(run_dir, "FAILED", f"cannot launch the supervisor: {e}")
            raise RunError(f"cannot launch the supervisor: {e}") from e
        # Popen returns after exec, so the create time and command line are the final ones.
        ctime = psutil.Process(proc.pid).create_time()
        lockfile.update_lock(self.workspace, lambda d: mine(d) and d.get("supervisor_pid") in (None, proc.pid), {
            "supervisor_pid": proc.pid, "pgid": proc.pid, "cmdline": cmd, "create_times": {str(proc.pid): ctime}})
        # Only to reap it when it exits (else it lingers as a zombie of this process).
        threading.Thread(target=proc.wait, name=f"reap-supervisor-{proc.pid}", daemon=True).start()

    def _clear_stale_or_raise(self, lock: LockRead, by: str) -> None:
        """With the guard held: remove a provably dead lock, or refuse naming the active run."""
        if not lock.present:
            return
        if lock.data is None:
            lockfile.remove_lock(self.workspace)
            return
        run_dir = lock.data["run_dir"]
        name = os.path.basename(run_dir)
        check = check_lock(lock.data)
        if check.foreign:
            raise RunError(f"a run is active on host {lock.data.get('hostname')}: {name}. It cannot be stopped "
                           f"from here; if that host is gone, clear it with "
                           f"`gemma-ft clean --force --workspace {self.workspace}`")
        if not check.stale:
            st = self._status_of(run_dir, lock)
            progress = f", step {st.step}/{st.max_steps}" if st.step is not None else ""
            raise RunError(f"a run is already active: {name} ({st.state.value}{progress}). Stop it with "
                           f"`gemma-ft stop --workspace {self.workspace}` or the panel's Abort button")
        why = "machine rebooted" if check.rebooted else "its processes are gone"
        if (lock.data.get("scheduler") or {}).get("kind") == "k8s" and os.path.isdir(run_dir):
            from .scheduled import record_end  # a Kubernetes Job has no supervisor to write its end
            record_end(run_dir, lock.data, check.job or {})
        ended = self._status_of(run_dir, lock).state if os.path.isdir(run_dir) else State.ORPHANED
        lockfile.remove_lock(self.workspace)
        if os.path.isdir(run_dir):  # an ended run (its trainer's `final` says so) keeps its label
            contract.append_status(run_dir, ended.value if ended in ENDED_STATES else "ORPHANED",
                                   f"lock cleared by {by} ({why})")

    def _wait_for_ending_run(self, timeout: float = ENDING_GRACE_S) -> None:
        """A run that wrote its result is about to drop its lock: let it, rather than refuse."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lock = lockfile.read_lock(self.workspace)
            if lock.data is None:
                return
            result, _ = read_result(lock.data["run_dir"])
            if result is None or result.get("attempt") != lock.data.get("attempt"):
                return
            if not check_lock(lock.data).procs:
                return  # nobody left to drop it: it is stale and will be cleared
            time.sleep(0.05)

    def _set_aside_result(self, run_dir: str, attempt: int | None) -> int:
        """Rename result.json to result.attempt-<k>.json; return the next attempt number."""
        done = []
        for path in glob.glob(os.path.join(run_dir, contract.result_attempt_name("*"))):
            m = contract.RESULT_ATTEMPT_RE.fullmatch(os.path.basename(path))
            if m:
                done.append(int(m.group(1)))
        prev = max([attempt or 1, *done])
        current = os.path.join(run_dir, contract.RESULT_NAME)
        if os.path.exists(current):
            target = os.path.join(run_dir, contract.result_attempt_name(prev))
            if os.path.exists(target):
                prev += 1
                target = os.path.join(run_dir, contract.result_attempt_name(prev))
            os.rename(current, target)
        return prev + 1

    def _extend(self, run_dir: str, st: RunStatus, max_steps: Any) -> str:
        """Raise the run's max_steps in its config (before its trainer starts); what the
        learning rate does with the extra steps, for status.log."""
        from ..config import END_LR_FRACTION, MAX_STEPS, ConfigError, TrainingConfig

        cfg = read_config(run_dir) or {}
        old = cfg.get("max_steps")
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 0 < max_steps <= MAX_STEPS:
            raise RunError(f"--max-steps must be a whole number from 1 to {MAX_STEPS:,}, got {max_steps!r}")
        if not isinstance(old, int) or max_steps <= old:
            raise RunError(f"--max-steps {max_steps} must be larger than {st.run_name}'s max_steps ({old})")
        new = {**cfg, "max_steps": max_steps, "schedule_steps": cfg.get("schedule_steps") or old}
        try:
            TrainingConfig.from_dict(new, check_files=False)
        except ConfigError as e:
            raise RunError(f"cannot extend {st.run_name}: {e}") from e
        contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), new)
        with self._read_mutex:
            self._configs.pop(run_dir, None)
        end_lr = float(cfg.get("learning_rate", 0)) * END_LR_FRACTION
        return (f"; max_steps {old} -> {max_steps}: the {cfg.get('lr_schedule', 'cosine')} schedule still ends at step {new['schedule_steps']}, "
                f"and the learning rate stays at its final value ({end_lr:g}) for the extra steps")

    @staticmethod
    def _why_not_resumable(st: RunStatus) -> str:
        name = st.run_name
        if st.foreign_host:
            return f"cannot resume {name}: it is active on host {st.foreign_host}"
        if st.active:
            return (f"cannot resume {name}: it is {st.state.value} (still active"
                    + (f": {st.reason})" if st.state == State.ORPHANED else ")")
                    + ("; its workspace lock is missing: `gemma-ft restore-lock` puts it back" if st.lock_missing else ""))
        if st.state == State.FINISHED:
            return (f"nothing to resume: {name} FINISHED; to train it further, `gemma-ft resume {name} "
                    "--max-steps N`")
        if st.state == State.FAILED:
            return f"nothing to resume: {name} FAILED before saving any checkpoint ({st.reason}); start a new run"
        return f"cannot resume {name}: it is {st.state.value}"


def _result_key(run_dir: str) -> tuple | None:
    """The identity of a run's result.json (None when it has none): a resume renames it aside,
    a rewrite replaces it (atomic writes make a new inode)."""
    try:
        st = os.stat(os.path.join(run_dir, contract.RESULT_NAME))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _checkpoint_step(checkpoint: Any, steps: list[int], name: str | None) -> int:
    text = str(checkpoint).rstrip("/").split("/")[-1].removeprefix(contract.CHECKPOINT_PREFIX)
    if not text.isdigit() or int(text) not in steps:
        have = ", ".join(contract.checkpoint_name(s) for s in steps) or "none"
        raise RunError(f"no checkpoint {checkpoint!r} in {name} (it has: {have})")
    return int(text)


def _refuse_other_process_count(run_dir: str, step: int | None) -> None:
    """Checkpoint `step` is resumed on as many processes as saved it (orbax could reshard it,
    but a different layout is a different run: the issue's contract; the trainer checks too)."""
    if step is None:
        return
    want = (read_config(run_dir) or {}).get("num_processes", 1)
    rel = contract.checkpoint_rel(step)
    try:
        saved = contract.read_json(os.path.join(run_dir, rel, "meta.json")).get("num_processes", 1)
    except (OSError, ValueError, AttributeError):
        return  # the trainer reports an unreadable checkpoint itself
    if saved != want:
        raise RunError(f"cannot resume {os.path.basename(run_dir)}: {rel} was saved by {saved} process(es), "
                       f"but its {contract.CONFIG_NAME} asks for num_processes {want}; a checkpoint is resumed "
                       f"on the number of processes that saved it (set num_processes back to {saved})")


def _refuse_what_cannot_fit(cfg, check_memory: bool = True) -> None:
    """Before anything is created: a config whose memory estimate exceeds this machine (unless
    the user said "start anyway"), or whose max_seq_len leaves nothing to train or an empty
    eval split (length_check.py)."""
    from ..config import ConfigError, FieldError
    from ..estimate import fit_problem
    from ..length_check import length_problems

    problem = fit_problem(cfg) if check_memory else None
    errors = ([FieldError(*problem)] if problem is not None else []) + length_problems(cfg)
    if errors:
        raise ConfigError(errors)


def _iso_time(t: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe_prefix(name: str) -> str:
    """A run name as a folder-name prefix (letters, digits, '.', '_', '-')."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not safe:
        raise RunError(f"run name {name!r} has no usable characters")
    return safe[:64]


def _remove_empty(path: str) -> None:
    """Remove a run folder that start() made and nothing was written to (never a real run)."""
    try:
        os.rmdir(path)
    except OSError:
        pass
