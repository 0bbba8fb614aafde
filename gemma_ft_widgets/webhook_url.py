"""Webhook URLs: what may be shown of one, and whether one is usable (stdlib only).

A webhook's path or query usually is its secret (Slack's and Discord's are), so logs and the
panel show only `redact(url)`: the scheme and host.
"""

from __future__ import annotations

import urllib.parse


def redact(url: str) -> str:
    """Scheme and host (and port), never the path, query or user info."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


def problem(url: str) -> str | None:
    """Why `url` cannot be a webhook, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        return f"has an invalid port ({redact(url)})"
    return None
