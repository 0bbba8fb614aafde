"""The loop's `step` events, read one step late.

A window gathers the metrics (device scalars) of the steps since the last `step` event. When
the loop closes it, the window waits (`pending`) until the next step has been queued and is
read then (`emit_pending`), so the device is never idle while Python writes events. Memory is
read at most once a second: on a fast step (a few ms) a psutil or memory_stats() read every
step would be a measurable share of the loop.
"""

from __future__ import annotations

import dataclasses
import time

from .. import contract
from .errors import first_nonfinite

T_PROCESS = time.time()


class HostMemory:
    """This process's RSS, read at most once per `every` seconds."""

    def __init__(self, every: float = 1.0):
        self.every = every
        self._at, self._value = -1e9, None
        try:
            import psutil

            self._proc = psutil.Process()
        except Exception:  # noqa: BLE001 - no psutil, or no /proc: the events carry None
            self._proc = None

    def rss(self) -> int | None:
        """This process's RSS in bytes (read again when `every` seconds passed), or None when it cannot be read."""
        if self._proc is None:
            return None
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at = now
            try:
                self._value = int(self._proc.memory_info().rss)
            except Exception:  # noqa: BLE001 - a failed read only leaves the field empty
                self._value = None
        return self._value


def device_memory(devices) -> tuple[int | None, int | None]:
    """(bytes in use, peak bytes) summed over local devices; (None, None) when the backend
    has no memory stats (CPU)."""
    used = peak = 0
    any_stats = False
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001 - backends without stats raise various errors
            stats = None
        if stats:
            any_stats = True
            used += int(stats.get("bytes_in_use", 0))
            peak += int(stats.get("peak_bytes_in_use", 0))
    return (used, peak) if any_stats else (None, None)


class DeviceMemory:
    """Bytes in use on this process's devices, read at most once per `every` seconds."""

    def __init__(self, devices, every: float = 1.0):
        self.devices, self.every = devices, every
        self._at, self._value = -1e9, None

    def used(self) -> int | None:
        """Bytes in use on the devices (read again when `every` seconds passed), or None without memory stats."""
        if time.monotonic() - self._at >= self.every:
            self._at, self._value = time.monotonic(), device_memory(self.devices)[0]
        return self._value


@dataclasses.dataclass
class _Window:
    step: int  # the last step in it
    losses: list  # device scalars, one a step
    norms: list  # gradient norms (device scalars) of the same steps
    tokens: int


class StepLog:
    """`step` events, TensorBoard scalars and the process report of the loop (see the module
    docstring). `losses` holds each logged step's mean loss."""

    def __init__(self, trainer, tb, first_step: int):
        import jax

        from .data import real_tokens

        self._trainer, self._tb, self._real_tokens = trainer, tb, real_tokens
        self._device = DeviceMemory(jax.local_devices())  # memory_stats() answers for this process's only
        self.losses: dict[int, float] = {}
        self.last_loss: float | None = None
        self._open = _Window(first_step, [], [], 0)
        self._pending: _Window | None = None
        self._announced = False
        self._t_last = time.time()

    def add(self, step: int, metrics: dict, host_batch: dict) -> None:
        """Step `step` was queued: its metrics join the window; the window before it is read now."""
        w = self._open
        w.step = step
        w.losses.append(metrics["loss"])
        w.norms.append(metrics["grad_norm"])
        w.tokens += self._real_tokens(host_batch)
        self.emit_pending()

    @property
    def nothing_logged(self) -> bool:
        """No step event yet in this attempt (the first one shows RUNNING at once)."""
        return not self._announced and self._pending is None and not self.losses

    def close_window(self) -> None:
        """The window becomes pending: read once the next step is queued."""
        self._pending, self._open = self._open, _Window(self._open.step, [], [], 0)

    def emit_pending(self) -> None:
        """Write the `step` event of the pending window, if there is one."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._emit(pending)

    def finish(self) -> None:
        """The loop ended: read the pending window, and the open one if it holds steps."""
        if self._open.losses and self._pending is None:
            self.close_window()
        self.emit_pending()

    def restart_clock(self) -> None:
        """Time spent in evals and saves is not step time."""
        self._t_last = time.time()

    def check_window(self, step: int) -> None:
        """Before a save: the steps not logged yet must be finite too."""
        import jax

        w = self._open
        if w.losses:
            vals, norms = jax.device_get((w.losses, w.norms))
            diverged = first_nonfinite(step - len(vals) + 1, [float(x) for x in vals], [float(x) for x in norms])
            if diverged is not None:
                raise diverged

    def _emit(self, w: _Window) -> None:
        import jax

        tr = self._trainer
        vals, norms = jax.device_get((w.losses, w.norms))
        vals, norms = [float(x) for x in vals], [float(x) for x in norms]
        diverged = first_nonfinite(w.step - len(vals) + 1, vals, norms)
        now = time.time()
        dt = max(now - self._t_last, 1e-9)
        self._t_last = now
        loss = sum(vals) / len(vals)
        self.last_loss = loss
        self.losses[w.step] = loss
        lr = float(tr.plan.lrs[w.step - 1])
        used = self._device.used()
        tr.event(contract.EVENT_STEP, step=w.step, loss=loss, lr=lr, grad_norm=sum(norms) / len(norms),
                 tokens_per_s=round(w.tokens / dt, 1),
                 step_time_s=round(dt / len(vals), 6), elapsed_s=round(now - T_PROCESS, 3),
                 device_mem_bytes=used, host_rss_bytes=tr.host_memory.rss())
        if tr.report is not None:
            tr.report.write(tr.host_memory.rss(), used, w.step)
        self._tb.scalars(w.step, {"loss": loss, "lr": lr, "grad_norm": sum(norms) / len(norms),
                                  "tokens_per_s": w.tokens / dt})
        if not self._announced:  # status.log gets one RUNNING line per attempt, at its first step
            self._announced = True
            if tr.chief:
                contract.append_status(tr.run_dir, "RUNNING", f"first step {w.step} logged")
        if diverged is not None:
            raise diverged
