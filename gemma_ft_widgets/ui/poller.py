"""The panel's background poller: one daemon thread that calls `tick()` about every
`interval()` seconds until stopped.

It waits on an Event, so `stop()` returns promptly and `kick()` asks for a poll now. An
exception in `tick` goes to `on_error` and polling continues. The thread never touches an
Output widget; `tick` only sets widget traits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Calls `tick()` from one daemon thread about every `interval()` seconds until stopped."""

    def __init__(self, tick: Callable[[], None], interval: Callable[[], float],
                 on_error: Callable[[BaseException], None] | None = None, name: str = "gft-poller"):
        self._tick = tick
        self._interval = interval
        self._on_error = on_error
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.ticks = 0

    def start(self) -> Poller:
        """Start the thread; returns the poller."""
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the polling thread runs."""
        return self._thread.is_alive()

    def kick(self) -> None:
        """Poll as soon as possible instead of waiting out the interval."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and wait for the thread (not when called from the thread itself)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._tick()
            except BaseException as e:  # noqa: BLE001 - keep polling whatever happens
                if self._on_error is not None:
                    try:
                        self._on_error(e)
                    except BaseException:  # noqa: BLE001 - the error handler's own failure must not end polling
                        pass
            self.ticks += 1
            try:
                interval = max(0.05, float(self._interval()))
            except Exception:  # noqa: BLE001 - the caller's interval function may raise anything: poll each second
                interval = 1.0
            self._wake.wait(interval)
            self._wake.clear()
