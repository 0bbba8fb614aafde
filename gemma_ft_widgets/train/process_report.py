"""Each trainer process of a multi-process run reports its own devices and memory.

Only process 0 writes metrics.jsonl, and it cannot see the other processes' memory (they may be
on other hosts). So every process rewrites `processes/process-<k>.json` (atomically, at most once
per `EVERY_S`): pid, host, its local devices, host RSS and device memory in use. `runs/status.py`
joins these to the lock's process list.
"""

from __future__ import annotations

import os
import socket
import time

from .. import contract

EVERY_S = 5.0


class ProcessReport:
    """This process's `processes/process-<k>.json` (see the module docstring)."""

    def __init__(self, run_dir: str, process: int, local_devices, every_s: float = EVERY_S):
        self.path = os.path.join(run_dir, contract.process_report_rel(process))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.every_s = every_s
        self._at = -1e9
        first = local_devices[0] if local_devices else None
        self._fixed = {
            "process": process, "pid": os.getpid(), "host": socket.gethostname(),
            "devices": [int(d.id) for d in local_devices],
            "platform": getattr(first, "platform", None), "device_kind": getattr(first, "device_kind", None),
        }

    def write(self, host_rss_bytes: int | None, device_mem_bytes: int | None, step: int | None,
              force: bool = False) -> None:
        """Rewrite the report with the current memory and step, unless one was written less than
        `every_s` ago (`force` writes anyway). A failed write is ignored."""
        now = time.monotonic()
        if not force and now - self._at < self.every_s:
            return
        self._at = now
        try:
            contract.atomic_write_json(self.path, {
                **self._fixed, "time": time.time(), "step": step,
                "host_rss_bytes": host_rss_bytes, "device_mem_bytes": device_mem_bytes})
        except OSError:  # a full or read-only disk must not end the run over a report
            pass


def read_reports(run_dir: str) -> dict[int, dict]:
    """{process: its last report} for the reports that parse; {} for a one-process run."""
    folder = os.path.join(run_dir, contract.PROCESSES_DIR)
    out: dict[int, dict] = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        if not (name.startswith("process-") and name.endswith(".json")):
            continue
        try:
            report = contract.read_json(os.path.join(folder, name))
            out[int(report["process"])] = report
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out
