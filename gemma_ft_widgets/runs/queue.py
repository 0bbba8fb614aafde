"""The workspace's run queue: validated configs that wait for the one active-run slot.

`<workspace>/.queue.json` is replaced atomically while `.queue.json.guard` is flock()ed, so
racing `queue add` calls from several terminals and kernels never lose an entry. Nothing here
lives in a kernel: when a run ends, its supervisor calls `advance_after`, which starts the
next entry; `add`, `resume`, `remove` and a polling panel call `advance` too, which starts the
head only while no run is active. The workspace lock keeps the one-active-run rule: a Start
racing the queue's start gives one run, and the entry stays queued when it lost.

Failure policy: after a FAILED or ABORTED run the queue pauses (`on_failure: "pause"`, the
default) or goes on (`"continue"`). A locked run that is ORPHANED blocks the queue until the
user resumes it, cleans it up, or removes it from the way; `blocked` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import secrets
from collections.abc import Iterator
from typing import Any

from .. import contract
from .errors import Remedy, RunError
from .state import ACTIVE_STATES, State

POLICIES = ("pause", "continue")
HISTORY = 50  # started entries remembered, for `queue list`


@dataclasses.dataclass
class Entry:
    """One queued run: its config, an optional name and sweep group, when it was added."""

    id: str
    config: dict[str, Any]
    name: str | None = None
    group: str | None = None
    added_at: str = ""

    def label(self) -> str:
        """The entry's name, else its model."""
        return self.name or self.config.get("model", "run")


@dataclasses.dataclass
class QueueState:
    """The queue file's contents, plus `blocked` (derived, never written)."""

    entries: list[Entry] = dataclasses.field(default_factory=list)
    paused: bool = False
    pause_reason: str = ""
    on_failure: str = "pause"
    started: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {id, run, group, at}
    blocked: str = ""  # why the head waits although the queue is not paused (derived, not stored)
    blocked_by: str = ""  # the ORPHANED run in the head's way, if that is why (derived, not stored)

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to the queue file (without the derived `blocked`, `blocked_by`)."""
        d = dataclasses.asdict(self)
        d.pop("blocked")
        d.pop("blocked_by")
        return {"version": 1, **d}

    def remedies(self) -> tuple[Remedy, ...]:
        """What the user can do about a paused queue, or one held up by an ORPHANED run
        (`blocked_by`, which RESUME and CLEAN act on)."""
        if self.paused:
            return (Remedy.QUEUE_RESUME,)
        if self.blocked_by:
            return (Remedy.RESUME, Remedy.CLEAN, Remedy.QUEUE_RESUME)
        return ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueueState:
        """Parse the queue file's JSON, dropping malformed entries and an unknown policy."""
        entries = [Entry(**{k: e.get(k) for k in ("id", "config", "name", "group", "added_at")})
                   for e in d.get("entries", []) if isinstance(e, dict) and "id" in e and "config" in e]
        policy = d.get("on_failure") if d.get("on_failure") in POLICIES else "pause"
        return cls(entries, bool(d.get("paused")), str(d.get("pause_reason") or ""), policy,
                   list(d.get("started") or [])[-HISTORY:])


def read(workspace: str) -> QueueState:
    """The queue as it is now (no guard needed: the file is replaced atomically)."""
    try:
        data = contract.read_json(os.path.join(workspace, contract.QUEUE_NAME))
    except FileNotFoundError:
        return QueueState()
    except ValueError as e:
        raise RunError(f"the queue file {os.path.join(workspace, contract.QUEUE_NAME)} is unreadable "
                       f"({e}); fix or remove it") from e
    return QueueState.from_dict(data if isinstance(data, dict) else {})


@contextlib.contextmanager
def editing(workspace: str) -> Iterator[QueueState]:
    """The queue under its guard; written back (atomically) if the block changed it."""
    guard = os.path.join(workspace, contract.QUEUE_GUARD_NAME)
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        state = read(workspace)
        before = state.to_dict()
        yield state
        if state.to_dict() != before:
            contract.atomic_write_json(os.path.join(workspace, contract.QUEUE_NAME), state.to_dict())
    finally:
        os.close(fd)  # releases the flock


def new_entry(config: dict[str, Any], name: str | None = None, group: str | None = None) -> Entry:
    """An Entry with a fresh random id, stamped now."""
    return Entry(id=secrets.token_hex(4), config=config, name=name, group=group, added_at=contract.utc_now())


def find(state: QueueState, entry_id: str) -> int:
    """The index of the entry whose id starts with `entry_id` (a unique prefix will do)."""
    hits = [i for i, e in enumerate(state.entries) if e.id.startswith(entry_id)] if entry_id else []
    if len(hits) != 1:
        ids = ", ".join(e.id for e in state.entries) or "the queue is empty"
        raise RunError(f"{'no' if not hits else 'more than one'} queued entry {entry_id!r} ({ids})")
    return hits[0]


def blocking_reason(manager, st=None) -> str | None:
    """Why the head cannot start now: a run is active, or the locked run is ORPHANED.
    `st`: the workspace's status when the caller has it already."""
    st = st if st is not None else manager.status()
    if st.state in ACTIVE_STATES:
        return f"waiting for {st.run_name} ({st.state.value})"
    if st.state == State.ORPHANED and manager.lock_present():
        return f"{st.run_name} is ORPHANED ({st.reason})"
    return None


def mark_blocked(q: QueueState, manager, st=None) -> QueueState:
    """Set `q.blocked` (why its head waits, else "") and `q.blocked_by` (the ORPHANED run in its
    way) for a queue with entries that is not paused. `st` as for blocking_reason."""
    q.blocked, q.blocked_by = "", ""
    if q.entries and not q.paused:
        st = st if st is not None else manager.status()
        q.blocked = blocking_reason(manager, st) or ""
        q.blocked_by = st.run_name if q.blocked and st.state == State.ORPHANED else ""
    return q


def advance(manager, past_orphan: bool = False) -> Any:
    """Start the head entry if the slot is free and the queue runs; returns the Run or None.
    `past_orphan`: the user unpaused the queue knowing the locked run is ORPHANED; its lock is
    cleared by the start (every file of it kept), as a new Start would.

    The entry leaves the queue only once its run started; a start that loses to another
    (a user's Start, a second advance) leaves it queued for the next run's end."""
    from ..config import ConfigError, TrainingConfig

    ws = manager.workspace
    if not os.path.exists(os.path.join(ws, contract.QUEUE_NAME)):
        return None
    with editing(ws) as q:
        if q.paused or not q.entries:
            return None
        st = manager.status()
        if blocking_reason(manager, st) is not None and not (past_orphan and st.state == State.ORPHANED):
            return None
        head = q.entries[0]
        try:  # validated again: its dataset may have gone while it waited, and start checks the fit
            run = manager.start(TrainingConfig.from_dict(head.config), name=head.name, group=head.group,
                                queue_id=head.id)
        except ConfigError as e:
            q.paused, q.pause_reason = True, f"queued entry {head.id} cannot start: {e.errors[0]}"
            return None
        except RunError:  # lost the slot to another start: stay queued
            return None
        q.entries.pop(0)
        q.started = (q.started + [{"id": head.id, "run": run.name, "group": head.group,
                                   "at": contract.utc_now()}])[-HISTORY:]
        return run


def advance_after(manager, run_name: str, state: str) -> Any:
    """A supervisor's call once its run ended (its lock already cleared)."""
    ws = manager.workspace
    if not os.path.exists(os.path.join(ws, contract.QUEUE_NAME)):
        return None
    if state in ("FAILED", "ABORTED"):
        with editing(ws) as q:
            if q.entries and q.on_failure == "pause" and not q.paused:
                q.paused, q.pause_reason = True, f"{run_name} ended {state}"
    return advance(manager)


class RunQueue:
    """One workspace's queue, as `RunManager(ws).queue`: what `gemma-ft queue` and the panel use."""

    def __init__(self, manager):
        self.manager = manager
        self.workspace = manager.workspace

    def list(self) -> QueueState:
        """The queue, with `blocked` saying why its head waits (when it does)."""
        if not os.path.isdir(self.workspace):
            return QueueState()
        return mark_blocked(read(self.workspace), self.manager)

    def add(self, config: Any, name: str | None = None, group: str | None = None) -> Entry:
        """Validate `config` (a TrainingConfig or dict), queue it, and start it if the slot is free."""
        return self.add_many([config], [name], group)[0]

    def add_many(self, configs: list[Any], names: list[str | None], group: str | None = None) -> list[Entry]:
        """Queue several validated configs in one atomic change (a sweep), then advance."""
        from ..config import TrainingConfig

        checked = [c if isinstance(c, TrainingConfig) else TrainingConfig.from_dict(c) for c in configs]
        for c in checked:
            self.manager.refuse_what_cannot_start(c)
        self.manager._make_workspace()
        entries = [new_entry(c.to_dict(), n, group) for c, n in zip(checked, names)]
        with editing(self.workspace) as q:
            q.entries.extend(entries)
        self.advance()
        return entries

    def remove(self, entry_id: str) -> Entry:
        """Take out and return the entry whose id starts with `entry_id`; RunError unless exactly one does."""
        with editing(self.workspace) as q:
            return q.entries.pop(find(q, entry_id))

    def clear(self) -> int:
        """Empty the queue; returns how many entries it held."""
        with editing(self.workspace) as q:
            n = len(q.entries)
            q.entries = []
        return n

    def pause(self, reason: str = "paused by the user") -> None:
        """Stop starting entries until resume, with `reason` shown by `queue list`."""
        with editing(self.workspace) as q:
            q.paused, q.pause_reason = True, reason

    def resume(self) -> Any:
        """Unpause and start the head if the slot is free, also past an ORPHANED run (the user
        said go on); returns that Run or None."""
        with editing(self.workspace) as q:
            q.paused, q.pause_reason = False, ""
        return advance(self.manager, past_orphan=True)

    def set_policy(self, on_failure: str) -> None:
        """Set what a FAILED or ABORTED run does to the queue: "pause" or "continue" (else RunError)."""
        if on_failure not in POLICIES:
            raise RunError(f"on_failure must be one of {', '.join(POLICIES)}, got {on_failure!r}")
        self.manager._make_workspace()
        with editing(self.workspace) as q:
            q.on_failure = on_failure

    def advance(self) -> Any:
        """Start the head entry if no run is active; returns that Run or None."""
        return advance(self.manager)
