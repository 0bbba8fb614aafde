"""RunManager: start, stop, resume, clean and delete runs in one workspace (the lifecycle).

Nothing here keeps state that matters: every answer is derived again from the workspace and
the process table, so any kernel or terminal can manage a run another one started. Reading is
delegated: the folders to runs/workspace.py, their states (and the caches that spare a poll
re-reading them) to runs/statuses.py. The steps are in their own modules: launching a
supervisor (runs/launch.py), the checks before a lock is taken (runs/guards.py), what a resume
checks and renames (runs/resuming.py), and finding and stopping the active run
(runs/stop_active.py).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .. import contract
from . import guards, launch, liveness, lockfile, resuming, sampling, warm_sampler
from .errors import Code, Remedy, RunError
from .lockfile import LockRead
from .state import State
from .status import RunStatus, check_lock
from .statuses import RunStatuses
from .stop_active import stop_active
from .stopping import StopReport
from .workspace import LOG_STREAMS, Workspace, default_workspace, safe_prefix

__all__ = ["LOG_STREAMS", "Run", "RunManager", "default_workspace"]


class Run:
    """A handle on one run folder. Holds no state: every call asks the workspace."""

    def __init__(self, manager: RunManager, run_dir: str):
        self.manager, self.run_dir = manager, run_dir

    @property
    def name(self) -> str:
        """The run folder's name."""
        return os.path.basename(self.run_dir)

    def status(self) -> RunStatus:
        """This run's status (see RunManager.status)."""
        return self.manager.status(self)

    def metrics(self, since: int = 0) -> tuple[list[dict], int]:
        """(events after byte offset `since`, the new offset) (see RunManager.metrics)."""
        return self.manager.metrics(self, since)

    def logs(self, stream: str = "stderr", max_lines: int = 200) -> str:
        """The last `max_lines` of one of the run's log streams (see RunManager.logs)."""
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
    """The lifecycle of the runs of one workspace. `folders` (a Workspace) lists and resolves
    run folders and reads their files; `statuses` (RunStatuses) derives their states."""

    def __init__(self, workspace: str | os.PathLike | None = None, trainer: str | None = None):
        self.folders = Workspace(workspace)
        self.workspace = self.folders.path
        self.trainer = trainer or os.environ.get(contract.TRAINER_ENV) or contract.DEFAULT_TRAINER
        self.statuses = RunStatuses(self.folders)
        self._write_mutex = threading.RLock()  # start / resume / clean / delete from several threads
        self._stop_mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"RunManager({self.workspace!r}, trainer={self.trainer!r})"

    # -- reading (delegated) ---------------------------------------------------------------
    def status(self, run: Any = None, missing_ok: bool = False) -> RunStatus:
        """The locked run's status, else the newest run's; IDLE when there are none (and, with
        `missing_ok`, when the workspace does not exist yet; else RunError)."""
        return self.statuses.status(run, missing_ok)

    def runs(self, missing_ok: bool = False) -> list[RunStatus]:
        """Every run in the workspace with its state, most recently active first."""
        return self.statuses.runs(missing_ok)

    def wait(self, run: Any = None, until: Any = None, timeout: float | None = None,
             interval: float = 0.25) -> RunStatus:
        """Poll the files until the run reaches `until`; return its status (see RunStatuses.wait)."""
        return self.statuses.wait(run, until, timeout, interval)

    def metrics(self, run: Any = None, since: int = 0) -> tuple[list[dict], int]:
        """(complete events appended after byte offset `since`, the new offset)."""
        return self.folders.metrics(run, since)

    def logs(self, run: Any = None, stream: str = "stderr", max_lines: int = 200) -> str:
        """The last `max_lines` of one of the run's LOG_STREAMS."""
        return self.folders.logs(run, stream, max_lines)

    def resolve(self, run: Any = None) -> str:
        """The folder of a run given as a Run, a name or a path (None: the active or newest run)."""
        return self.folders.resolve_or_default(run)

    def run_config(self, run: Any = None) -> dict:
        """The run's config.json; RunError when it is missing or unreadable."""
        return self.folders.run_config(run)

    # -- starting --------------------------------------------------------------------------
    @property
    def queue(self):
        """This workspace's run queue (runs/queue.py): add, list, remove, clear, pause, resume."""
        from .queue import RunQueue

        return RunQueue(self)

    def lock_present(self) -> bool:
        """Whether the workspace lock file exists (readable or not)."""
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
        self.folders.make()
        prefix = safe_prefix(name) if name else cfg.run_name_prefix()
        with self._write_mutex:
            self._wait_for_ending_run()
            with lockfile.guard(self.workspace):
                lock = lockfile.read_lock(self.workspace, locked=True)
                self._clear_stale_or_raise(lock, "a new start")
                guards.refuse_unlocked_live_runs(self.folders, lock)
                run_dir = self._create_locked_run_dir(prefix, cfg.to_dict(),
                                                      {"name": name, "group": group, "queue_id": queue_id})
            if start_anyway:
                from ..fit import start_anyway_note

                contract.append_status(run_dir, "STARTING", start_anyway_note(cfg))
            self._launch(run_dir, 1)
        return Run(self, run_dir)

    def _create_locked_run_dir(self, prefix: str, config: dict, info: dict) -> str:
        """With the guard held: a new run folder, the lock naming it, its config and run_info;
        on failure nothing of them is left."""
        run_dir = self.folders.new_run_dir(prefix)
        # The folder first: a poller that reads the lock must find the folder it names.
        # Empty, it is not listed as a run until the lock names it.
        self.folders.create_run_dir(run_dir)
        if not lockfile.create_lock(self.workspace, launch.lock_data(run_dir, 1, self.trainer)):
            self.folders.remove_empty(run_dir)
            raise RunError("another run was started at the same moment")  # unguarded writer
        try:
            self.folders.write_run_files(run_dir, config, info)
        except OSError as e:
            lockfile.remove_lock(self.workspace)
            self.folders.remove_empty(run_dir)
            raise RunError(f"cannot create the run folder {run_dir}: {e}") from e
        return run_dir

    def resume(self, run: Any = None, checkpoint: Any = None, max_steps: int | None = None) -> Run:
        """Restart an ORPHANED or ABORTED run (or a FAILED one with a checkpoint) in the same
        folder from its newest checkpoint that restores; the trainer appends to its metrics.
        `checkpoint` (N or "step_N"): resume from that one; newer ones are set aside (renamed
        step_M.set-aside-<attempt>, kept), so the trainer finds it newest. `max_steps`: train
        on to that step, also a FINISHED run, with its optimizer state; the cosine schedule
        keeps its end, and the learning rate holds at its final value for the extra steps."""
        from . import scheduled

        self.folders.need(writable=True)
        with self._write_mutex:
            self._wait_for_ending_run()
            with lockfile.guard(self.workspace):
                lock = lockfile.read_lock(self.workspace, locked=True)
                run_dir, st = self._resumable(run, lock, max_steps)
                if lock.present:
                    self._clear_stale_or_raise(lock, "resume")
                wanted = resuming.checkpoint_step(checkpoint, st.checkpoints, st.run_name) \
                    if checkpoint is not None else None
                ckpt = wanted if wanted is not None else (st.checkpoints[-1] if st.checkpoints else None)
                resuming.refuse_other_process_count(run_dir, ckpt)
                extended = ""
                if max_steps is not None:
                    extended = resuming.extend(run_dir, st, max_steps)
                    self.statuses.config_changed(run_dir)
                attempt = resuming.set_aside_result(run_dir, st.attempt)
                if wanted is not None:
                    resuming.set_aside_newer(run_dir, st.checkpoints, wanted, attempt)
                on_slurm = scheduled.scheduler_of(run_dir) is not None  # Slurm or Kubernetes: a new job
                lockfile.create_lock(self.workspace, scheduled.resume_lock(self, run_dir, attempt) if on_slurm
                                     else launch.lock_data(run_dir, attempt, self.trainer))
            contract.append_status(run_dir, "STARTING", f"resume: attempt {attempt} from "
                                   + (f"checkpoint step {ckpt}" if ckpt else "step 0 (no checkpoint)") + extended)
            if on_slurm:
                scheduled.resubmit(self, run_dir, attempt)
            else:
                self._launch(run_dir, attempt)
        return Run(self, run_dir)

    def _resumable(self, run: Any, lock: LockRead, max_steps: int | None) -> tuple[str, RunStatus]:
        """With the guard held: the folder and status of the run to resume, or RunError why not."""
        if run is None:
            run = self.folders.default_run(lock)
            if run is None:
                raise RunError(f"nothing to resume: no runs in {self.workspace}")
        run_dir = self.folders.resolve(run)  # also refuses a lock naming a folder elsewhere
        st = self.statuses.of(run_dir, lock)
        extend = (max_steps is not None and st.state == State.FINISHED and bool(st.checkpoints)
                  and not st.active and st.foreign_host is None)
        if not st.can_resume and not extend:
            raise resuming.refusal(st, self.workspace)
        guards.refuse_if_in_use(self.workspace, run_dir, "resume")
        return run_dir, st

    def _launch(self, run_dir: str, attempt: int) -> None:
        warm_sampler.end_all(self.workspace)  # the playground's warm samplers give the accelerator back
        launch.launch_supervisor(self.workspace, self.trainer, run_dir, attempt)

    # -- stopping and cleaning -------------------------------------------------------------
    def stop(self, force: bool = False, timeout: float = 30.0, term_timeout: float = 5.0,
             kill_timeout: float = 10.0) -> StopReport:
        """Stop the active run: SIGINT to the trainer, after `timeout` s SIGTERM, after
        `term_timeout` s SIGKILL to the process group (`force`: the group kill at once).
        Returns when the group is gone. Safe to call from any thread: a second graceful stop
        waits for the first (then finds nothing to stop); a forced stop never waits."""
        self.folders.need(writable=True)
        acquired = self._stop_mutex.acquire(blocking=not force)
        try:
            return stop_active(self, force, timeout, term_timeout, kill_timeout)
        finally:
            if acquired:
                self._stop_mutex.release()

    def restore_lock(self, run: Any = None) -> str:
        """Write the workspace lock again for a live run whose lock was deleted, from the
        processes found by identity (runs/liveness.py). None: the first such run."""
        self.folders.need(writable=True)
        with self._write_mutex, lockfile.guard(self.workspace):
            lock = lockfile.read_lock(self.workspace, locked=True)
            if run is None:
                live = guards.unlocked_live_runs(self.folders, lock)
                if not live:
                    raise RunError(f"nothing to restore: no run in {self.workspace} is alive without its lock")
                run_dir = live[0]
            else:
                run_dir = self.folders.resolve(run)
            name = os.path.basename(run_dir)
            if lock.data and lockfile.names(lock.data, run_dir):
                raise RunError(f"nothing to restore: the lock of {name} is in place")
            if lock.present:
                self._clear_stale_or_raise(lock, "restore-lock")
            procs = liveness.processes(run_dir)
            if not procs:
                raise RunError(f"nothing to restore: no process of {name} is alive")
            launch.restore_lock(self.workspace, run_dir, procs, self.trainer)
        pids = ", ".join(f"{r} pid {p.pid}" for r, p in procs.items())
        return f"restored the lock of {name} ({pids})"

    def clean(self, force: bool = False) -> str:
        """Clear the lock of an ORPHANED run, keeping every file. `force` also clears a lock
        held by another host (when you know that host is gone)."""
        self.folders.need(writable=True)
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
                               "still be training", Code.FOREIGN, (Remedy.CLEAN_FORCE,), name, self.workspace)
            if not check.foreign and not check.stale:
                raise RunError(f"run {name} is active", Code.ACTIVE, (Remedy.STOP,), name, self.workspace)
            lockfile.remove_lock(self.workspace)
            if os.path.isdir(run_dir):
                contract.append_status(run_dir, "ORPHANED", "lock cleared by clean" + (" --force" if force else ""))
        message = f"cleared the lock of {name}; every file is kept, and it can be resumed"
        started = self.queue.advance()  # the orphan no longer blocks the queue
        return message + (f"; the queue started {started.name}" if started is not None else "")

    def delete(self, run: Any) -> str:
        """Delete a run folder and everything in it. Refused while the run is active."""
        self.folders.need(writable=True)
        if run is None:
            raise RunError("say which run to delete")
        run_dir = self.folders.resolve(run)
        with self._write_mutex, lockfile.guard(self.workspace):
            lock = lockfile.read_lock(self.workspace, locked=True)
            if lock.data and lockfile.names(lock.data, run_dir):
                check = check_lock(lock.data)
                if check.foreign or not check.stale:
                    raise RunError(f"run {os.path.basename(run_dir)} is active; stop it before deleting it")
                lockfile.remove_lock(self.workspace)
            guards.refuse_if_in_use(self.workspace, run_dir, "delete")
            self.folders.delete_run_dir(run_dir)
        self.statuses.forget(run_dir)
        return f"deleted {run_dir}"

    # -- sampling and export (subprocesses; jax never loads in this process) ---------------
    def sample(self, run: Any, prompt: str, max_new_tokens: int = 64, checkpoint: Any = None,
               timeout: float = 300, on_progress=None) -> dict:
        """Greedy sampling from a checkpoint, in a subprocess (jax never loads here);
        `on_progress(phase)` hears its phases."""
        return sampling.sample(self.resolve(run), prompt, max_new_tokens, checkpoint, timeout,
                               on_progress=on_progress)

    def export(self, run: Any, out_dir: str, timeout: float | None = None, format: str = "gemma",
               checkpoint: Any = None, dtype: str | None = None, on_progress=None) -> str:
        """Export a checkpoint (newest by default) to `out_dir`, in a subprocess: format "gemma"
        (orbax), "hf" (transformers), "peft" (adapter) or "gguf" (llama.cpp / Ollama). Returns
        the exporter's stdout: the folder, then the command that loads it. See docs/export.md."""
        return sampling.export(self.resolve(run), out_dir, timeout, format=format,
                               checkpoint=checkpoint, dtype=dtype, on_progress=on_progress)

    # -- for runs/scheduled.py, queue.py and k8s.py, which launch past this host -------------
    def _make_workspace(self) -> None:
        self.folders.make()

    def _new_run_dir(self, prefix: str) -> str:
        return self.folders.new_run_dir(prefix)

    def _wait_for_ending_run(self) -> None:
        guards.wait_for_ending_run(self.workspace)

    def _clear_stale_or_raise(self, lock: LockRead, by: str) -> None:
        guards.clear_stale_or_raise(self.workspace, lock, by, self.statuses.of)


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
