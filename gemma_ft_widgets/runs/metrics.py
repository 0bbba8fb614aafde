"""Incremental reading of metrics.jsonl: each refresh costs what was appended, not the file."""

from __future__ import annotations

import os
from typing import Any

from .. import contract


class MetricsReader:
    """Keeps a byte offset into metrics.jsonl; `read_new()` returns only new complete events.

    For a UI poller: create one per run and call `read_new()` on every tick.
    """

    def __init__(self, run_dir_or_path: str | os.PathLike, offset: int = 0):
        path = os.fspath(run_dir_or_path)
        if os.path.isdir(path):
            path = os.path.join(path, contract.METRICS_NAME)
        self._tail = contract.JsonlTail(path, offset)

    @property
    def path(self) -> str:
        return self._tail.path

    @property
    def offset(self) -> int:
        return self._tail.offset

    @property
    def corrupt_lines(self) -> int:
        return self._tail.corrupt_lines

    def read_new(self) -> list[dict[str, Any]]:
        return self._tail.read_new()


class MetricsSummary:
    """The latest values a status needs, folded from events as they are appended."""

    def __init__(self, run_dir: str):
        self.reader = MetricsReader(os.path.join(run_dir, contract.METRICS_NAME))
        self.reset()

    def reset(self) -> None:
        self.last_step: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.last_start: dict[str, Any] | None = None
        self.last_checkpoint: dict[str, Any] | None = None
        self.last_final: dict[str, Any] | None = None
        self.first_time: float | None = None
        self.stepped = False  # a step after the latest start
        self.events = 0

    def refresh(self) -> "MetricsSummary":
        before = self.reader.offset
        events = self.reader.read_new()
        if self.reader.offset < before:  # the file was replaced or truncated: start over
            self.reset()
        for e in events:
            self._feed(e)
        return self

    def _feed(self, e: dict[str, Any]) -> None:
        self.events += 1
        kind = e.get("event")
        t = e.get("time")
        if self.first_time is None and isinstance(t, (int, float)):
            self.first_time = float(t)
        if kind == "start":
            self.last_start, self.stepped, self.last_final = e, False, None
        elif kind == "step" and isinstance(e.get("step"), int):
            self.last_step, self.stepped = e, True
        elif kind == "eval":
            self.last_eval = e
        elif kind == "checkpoint":
            self.last_checkpoint = e
        elif kind == "final":
            self.last_final = e

    def value(self, event: str, key: str) -> Any:
        e = {"step": self.last_step, "eval": self.last_eval, "start": self.last_start}[event]
        return None if e is None else e.get(key)
