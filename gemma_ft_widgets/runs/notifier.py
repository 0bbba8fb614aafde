"""The webhook-sending process: `python -m gemma_ft_widgets.runs.notifier RUN_DIR --workspace WS
--attempt K`, started detached by `notify.spawn` so that a hanging webhook never delays a run.

Its own module because it reads the run's status through the RunManager, which itself spawns it.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import notify
from .manager import RunManager
from .status import read_config


def main(argv: list[str] | None = None) -> int:
    """Send the run's webhook once (if configured and not yet claimed) and log the outcome; 1 when the send failed."""
    p = argparse.ArgumentParser(prog="gemma_ft_widgets.runs.notifier")
    p.add_argument("run_dir")
    p.add_argument("--workspace", required=True)
    p.add_argument("--attempt", type=int, required=True)
    args = p.parse_args(argv)
    url = notify.webhook_url(args.workspace, read_config(args.run_dir))
    if url is None or not notify.claim(args.run_dir, args.attempt):
        return 0
    status = RunManager(args.workspace).status(os.path.basename(args.run_dir))
    ok, what = notify.send(url, notify.payload(args.run_dir, status))
    notify.log_outcome(args.run_dir, f"webhook {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
