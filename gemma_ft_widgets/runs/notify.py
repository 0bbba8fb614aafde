"""Webhook notifications when a run ends: the payload, the one-per-attempt claim, the POST, and
`spawn`, which starts the sending process (`runs/notifier.py`).

The URL comes from the run's config (`notify`) or the workspace's settings.json. One JSON
POST per ended attempt (FINISHED, FAILED, ABORTED, ORPHANED), with `text` and `content` keys
so that Slack and Discord incoming webhooks show it and ntfy posts it as the message.

It runs in a process of its own, started detached by the supervisor (or by the first status
read that finds a run ORPHANED, since nothing of that run is alive to send it): a webhook
that hangs or fails can never delay the run, its result or the next queued run. Each attempt
is sent at most once (an O_EXCL marker file). The outcome goes to status.log with the URL
redacted to its scheme and host: a URL's path and query often hold the secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from .. import contract
from ..webhook_url import redact

TIMEOUT_S = 5.0
NOTIFIER_MODULE = "gemma_ft_widgets.runs.notifier"
TRIES = 2  # one retry
RETRY_AFTER_S = 1.0


def webhook_url(workspace: str, config: dict[str, Any] | None) -> str | None:
    """The run's `notify` URL, else the workspace setting, else None."""
    url = (config or {}).get("notify") or ""
    if not url and os.path.exists(os.path.join(workspace, contract.SETTINGS_NAME)):
        try:
            settings = contract.read_json(os.path.join(workspace, contract.SETTINGS_NAME))
            url = settings.get("notify") or "" if isinstance(settings, dict) else ""
        except (FileNotFoundError, ValueError, OSError):
            url = ""
    return url or None


def payload(run_dir: str, status) -> dict[str, Any]:
    """The POST body: the run's name, state, reason, final and best eval loss, steps, time."""
    evals = [e.get("eval_loss") for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME))
             if e.get("event") == "eval" and isinstance(e.get("eval_loss"), (int, float))]
    best = min(evals) if evals else None
    name, state = os.path.basename(run_dir), status.state.value
    text = f"gemma-ft: {name} {state}" + (f" ({status.reason})" if status.reason else "")
    if status.step is not None:
        text += f", step {status.step}/{status.max_steps}"
    if best is not None:
        text += f", best eval loss {best:.4f}"
    return {"run": name, "state": state, "reason": status.reason, "final_eval_loss": status.eval_loss,
            "best_eval_loss": best, "steps": status.step, "max_steps": status.max_steps,
            "elapsed_s": status.elapsed_s, "attempt": status.attempt, "text": text, "content": text}


def send(url: str, body: dict[str, Any], timeout: float = TIMEOUT_S, tries: int = TRIES) -> tuple[bool, str]:
    """POST `body` as JSON; (delivered, what happened), the URL redacted."""
    data = json.dumps(body).encode()
    what = ""
    for i in range(tries):
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "gemma-ft-widgets"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return True, f"sent to {redact(url)} (HTTP {resp.status})"
        except urllib.error.HTTPError as e:
            what = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:  # refused, timed out, DNS: all retried once
            reason = getattr(e, "reason", e)
            what = "timed out" if "timed out" in str(reason) else type(reason).__name__
        if i + 1 < tries:
            time.sleep(RETRY_AFTER_S)
    return False, f"to {redact(url)} failed after {tries} tries ({what})"


def claim(run_dir: str, attempt: int) -> bool:
    """True once per (run, attempt): whoever creates the marker sends the webhook."""
    try:
        fd = os.open(os.path.join(run_dir, f"{contract.NOTIFIED_PREFIX}{attempt}"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError:  # a read-only workspace: nobody can record it, so nobody sends it
        return False
    os.close(fd)
    return True


def spawn(run_dir: str, workspace: str, attempt: int, config: dict[str, Any] | None) -> None:
    """Send in a detached process, if a URL is configured and this attempt was not sent yet."""
    from .launch import package_env

    if os.path.exists(os.path.join(run_dir, f"{contract.NOTIFIED_PREFIX}{attempt}")):
        return  # sent already: the cheap check first, status reads call this on every poll
    if webhook_url(workspace, config) is None:
        return
    subprocess.Popen([sys.executable, "-m", NOTIFIER_MODULE, run_dir, "--workspace", workspace,
                      "--attempt", str(attempt)], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=package_env())


def log_outcome(run_dir: str, message: str) -> None:
    """A NOTIFY line in status.log, keeping the file's mtime: it orders the runs ("newest")."""
    path = os.path.join(run_dir, contract.STATUS_LOG_NAME)
    try:
        before = os.stat(path)
    except OSError:
        before = None
    contract.append_status(run_dir, "NOTIFY", message)
    if before is not None:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
