"""The trainer processes of a multi-process run on the dashboard: process, pid, host, alive (and
how each ended), devices and memory, from RunStatus.processes (the lock's list while it runs,
result.json after, each joined with the process's own report); and, for a run launched through a
scheduler, its job. Hidden for a run of one process."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from . import fmt

ALIVE = {True: ("alive", "#2e7d32"), False: ("gone", "#9e9e9e"), None: ("?", "#9e9e9e")}


def processes_html(status: Any) -> str:
    """The table's HTML, or "" when there is nothing to show."""
    rows = []
    processes = getattr(status, "processes", None) or []
    for p in processes if len(processes) > 1 else []:
        word, color = ALIVE.get(p.get("alive"), ALIVE[None])
        ended = (f"signal {p['signal_name']}" if p.get("signal_name") else
                 f"exit {p['exit_code']}" if p.get("exit_code") is not None else "")
        rows.append(f'<tr class="gft-process" data-process="{fmt.esc(str(p.get("process")))}">'
                    f'<td>{fmt.esc(str(p.get("process")))}</td><td>{fmt.esc(str(p.get("pid")))}</td>'
                    f'<td>{fmt.esc(str(p.get("host") or fmt.DASH))}</td>'
                    f'<td style="color:{color};font-weight:600">{word}</td>'
                    f'<td>{fmt.esc(_devices(p))}</td>'
                    f'<td class="gft-process-host-mem">{fmt.nbytes(p.get("host_rss_bytes"))}</td>'
                    f'<td class="gft-process-device-mem">{fmt.nbytes(p.get("device_mem_bytes"))}</td>'
                    f'<td>{fmt.esc(ended)}</td></tr>')
    job = getattr(status, "job", None)
    head = ""
    if job:
        head = (f'<div class="gft-job">{fmt.esc(str(job.get("kind")))} job <b>{fmt.esc(str(job.get("job_id")))}</b>'
                f' · {fmt.esc(str(job.get("state") or fmt.DASH))}</div>')
    if not rows:
        return head
    return (head + '<table class="gft-processes" style="font-size:0.85em;border-spacing:10px 0">'
            "<tr><th>process</th><th>pid</th><th>host</th><th>alive</th><th>devices</th>"
            "<th>host memory</th><th>device memory</th><th>ended</th></tr>"
            + "".join(rows) + "</table>")


def _devices(p: dict) -> str:
    ids = p.get("devices")
    if not ids:
        return fmt.DASH
    return f"{len(ids)} × {p.get('platform') or '?'} ({', '.join(str(i) for i in ids)})"


class ProcessesView(w.HTML):
    """The processes table (see the module docstring); hidden while it is empty."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_class("gft-processes-view")
        self.layout.display = "none"

    def show(self, status: Any) -> None:
        """Draw `status`'s processes and job; hide the view when there is nothing to show."""
        html = processes_html(status)
        if self.value != html:
            self.value = html
        display = None if html else "none"
        if self.layout.display != display:
            self.layout.display = display
