"""What the control panel does, without its widgets: which run it shows (navigation), one
snapshot of the workspace per poll, the worker threads its buttons run in, the caches of
curves and logs, and its message log. No ipywidgets here, so it runs without a kernel; the
panel (ui/panel.py) draws a snapshot and ui/panel_actions.py words the buttons' outcomes.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..runs import RunError, RunManager
from ..runs import queue as runqueue
from ..runs.results import stderr_tail
from .series import RunSeries
from .state_table import look

LOG_LINES = 200
SERIES_CACHE = 8
MESSAGES = 6


@dataclass
class Snapshot:
    """One poll's reading of the workspace."""

    workspace: Any  # the workspace's status (IDLE before its folder exists)
    active: str = ""  # folder of the active run, "" when none
    runs: list = field(default_factory=list)  # every run's status, as RunManager.runs() lists them
    shown: Any = None  # status of the run to show; None: the form
    queue: Any = None  # runs.queue's Queue (None before the folder exists, or unreadable)
    queue_error: str = ""  # why the queue could not be read


class PanelController:
    """Navigation (`mode`, `pinned`), polling, workers and caches of one control panel.

    mode: "auto" follows the workspace (its active run, else the newest), "form" is New run,
    "run" shows the `pinned` run (picked in the run table). A run that starts, here or
    elsewhere, switches back to auto so the panel follows it.
    """

    def __init__(self, manager: RunManager, *, on_done: Callable[[], None] = lambda: None,
                 on_note: Callable[[], None] = lambda: None):
        self.manager = manager
        self.workspace = manager.workspace
        self.lock = threading.RLock()  # held while a poll reads and draws, and by navigation
        self.mode = "auto"
        self.pinned = ""
        self.stop_in_flight = False
        self.sampling: list | None = None  # [phase, t0] while the playground samples
        self.messages: collections.deque = collections.deque(maxlen=MESSAGES)  # (stamp, text, kind, times)
        self.series: collections.OrderedDict[str, RunSeries] = collections.OrderedDict()
        self._on_done = on_done  # a worker ended: refresh the panel
        self._on_note = on_note  # the message log changed
        self._last_active: str | None = None
        self._logs_key: tuple | None = None
        self._stderr_tail = ""
        self._workers: set[threading.Thread] = set()

    # -- polling ----------------------------------------------------------------------------
    def poll(self) -> Snapshot:
        """Read the workspace once: its status, its runs, its queue, and which run to show.
        Starts the queue's head when the active-run slot is free (a supervisor that died before
        it could advance the queue leaves that to whoever looks next)."""
        ws = self.manager.status(missing_ok=True)  # IDLE: nothing was ever started here
        active = ws.run_dir if (ws.active and ws.run_dir) else ""
        if active and active != self._last_active:  # a run started, here or elsewhere: follow it
            self.mode, self.pinned = "auto", ""
        self._last_active = active
        snap = Snapshot(ws, active, self.manager.runs(missing_ok=True))
        if os.path.isdir(self.workspace):
            self._read_queue(snap)
        snap.shown = self._shown(snap)
        return snap

    def _read_queue(self, snap: Snapshot) -> None:
        try:
            q = runqueue.read(self.workspace)
        except RunError as e:
            snap.queue_error = str(e)
            return
        if q.entries and not q.paused:
            runqueue.mark_blocked(q, self.manager, snap.workspace)
            if not q.blocked and not self.busy("queue"):
                self.spawn("queue", self.manager.queue.advance)
        snap.queue = q

    def _shown(self, snap: Snapshot):
        if self.mode == "form":
            return None
        if self.mode == "run" and self.pinned:
            for st in snap.runs:
                if st.run_dir == self.pinned:
                    return st
            try:
                return self.manager.status(self.pinned)
            except RunError:  # deleted meanwhile
                self.mode, self.pinned = "auto", ""
        if look(snap.workspace.state).view == "form":
            return None
        return snap.workspace

    @staticmethod
    def playground_run(snap: Snapshot):
        """The run the playground samples: the one shown, else (the form is shown) the newest
        run with a checkpoint."""
        if snap.shown is not None:
            return snap.shown
        return next((st for st in snap.runs if st.last_checkpoint), None)

    # -- navigation -------------------------------------------------------------------------
    def navigate(self, mode: str, pinned: str = "") -> None:
        """Show `mode` ("auto", "form" or "run"; `pinned`: the run folder a "run" view shows)."""
        self.mode, self.pinned = mode, pinned

    def follow(self) -> None:
        """Back to following the workspace (after a start or resume, under the lock)."""
        with self.lock:
            self.mode, self.pinned = "auto", ""

    # -- caches -----------------------------------------------------------------------------
    def series_for(self, run_dir: str) -> RunSeries:
        """The run's curves, kept for the SERIES_CACHE runs used last."""
        series = self.series.get(run_dir)
        if series is None:
            series = self.series[run_dir] = RunSeries(run_dir)
            while len(self.series) > SERIES_CACHE:
                self.series.popitem(last=False)
        else:
            self.series.move_to_end(run_dir)
        return series

    def read_series(self, run_dir: str) -> RunSeries:
        """The run's curves with what metrics.jsonl appended since the last read (RunError when
        the folder is not in the workspace)."""
        series = self.series_for(run_dir)
        series.read(self.manager.resolve(run_dir))
        return series

    def read_many(self, run_dirs: list[str]) -> dict[str, RunSeries]:
        """The curves of each of these runs still in the workspace (the run table's overlay)."""
        read = {}
        for run_dir in run_dirs:
            try:
                read[run_dir] = self.read_series(run_dir)
            except RunError:  # deleted meanwhile
                continue
        return read

    def logs(self, st, stream: str) -> tuple[str, str, str] | None:
        """(status.log's tail, the stream's tail, stderr's tail when FAILED) of the run shown, or
        None when unchanged: an ended run's logs are read once, not every poll."""
        state = look(st.state)
        key = (st.run_dir, st.state, stream, st.attempt)
        if not state.active and key == self._logs_key:
            return None
        transitions = self.manager.logs(st.run_dir, "status", 50)
        text = self.manager.logs(st.run_dir, stream, LOG_LINES)
        self._stderr_tail = ("\n".join(stderr_tail(st.run_dir, st.stderr_offset).splitlines()[-40:])
                             if state.stderr else "")
        self._logs_key = key
        return transitions, text, self._stderr_tail

    @property
    def stderr_tail(self) -> str:
        """The shown run's last stderr lines, as the latest log read left them ("" for a state that shows none)."""
        return self._stderr_tail

    def stop_settled(self, state: str) -> bool:
        """Whether a stop asked for here is still under way for a run in `state`."""
        if not look(state).active and not self.busy("stop", "force"):
            self.stop_in_flight = False
        return self.stop_in_flight

    # -- workers ----------------------------------------------------------------------------
    def spawn(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        """Run `fn` in a worker thread; its error goes to the message log, never the kernel."""
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - shown, never raised into the kernel
                self.note(f"{name} failed: {type(e).__name__}: {e}", "error")
            finally:
                self._workers.discard(threading.current_thread())
                try:
                    self._on_done()
                except Exception as e:  # noqa: BLE001 - a refresh's error is shown like a poll's
                    self.note(f"refresh failed: {e}", "error")

        th = threading.Thread(target=run, name=f"gft-{name}", daemon=True)
        self._workers.add(th)
        th.start()
        return th

    def busy(self, *names: str) -> bool:
        """Whether a worker of one of these names is running."""
        return any(th.name in {f"gft-{n}" for n in names} and th.is_alive() for th in list(self._workers))

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for every worker. True when all ended."""
        deadline = time.monotonic() + timeout
        while True:
            workers = [th for th in list(self._workers) if th.is_alive()]
            if not workers:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            workers[0].join(min(left, 0.2))

    # -- messages ---------------------------------------------------------------------------
    def note(self, text: str, kind: str = "info") -> None:
        """Add a line to the message log; the same line again counts up (×n)."""
        stamp = time.strftime("%H:%M:%S")
        if self.messages and self.messages[-1][1] == text:
            self.messages[-1] = (stamp, text, kind, self.messages[-1][3] + 1)
        else:
            self.messages.append((stamp, text, kind, 1))
        self._on_note()

    # -- actions without widgets ------------------------------------------------------------
    def enqueue_sweep(self, config, grid: list[str]) -> list:
        """Queue one run per point of the grid, as a group."""
        from .. import sweep

        parsed = sweep.parse_grid(grid)
        n = sweep.size(parsed)
        if n > sweep.MAX_POINTS:
            raise RunError(f"the grid has {n} points (more than {sweep.MAX_POINTS}); "
                           "queue it from a terminal with gemma-ft sweep --yes")
        points = sweep.points(config.to_dict(), parsed)
        group = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        return self.manager.queue.add_many([c for _, c in points], [sweep.point_name(group, p) for p, _ in points],
                                           group=group)

    def sample(self, samplers, run_dir: str, messages: list, base_messages: list | None,
               checkpoint: int | None, settings: dict, on_phase: Callable[[str], None]) -> tuple[dict, dict | None]:
        """The tuned model's answer, and the base model's when comparing, from the run's warm
        sampler. `sampling` holds the phase meanwhile, so each poll can show the time taken; the
        caller sets it back to None (under `lock`, with its last word on the progress line)."""
        self.sampling = ["starting the sampler in a separate process", time.monotonic()]
        on_phase(self.sampling[0])

        def say(phase: str) -> None:
            self.sampling[0] = phase
            on_phase(phase)

        out = samplers.generate(run_dir, messages, checkpoint=checkpoint, on_progress=say, **settings)
        base = None
        if base_messages is not None:
            say("the base model")
            base = samplers.generate(run_dir, base_messages, checkpoint=checkpoint, model="base",
                                     on_progress=say, **settings)
        return out, base

    def sampling_phase(self) -> str | None:
        """'<phase>… N s' while the playground samples, else None."""
        sampling = self.sampling
        if sampling is None:
            return None
        return f"{sampling[0]}… {time.monotonic() - sampling[1]:.0f} s"
