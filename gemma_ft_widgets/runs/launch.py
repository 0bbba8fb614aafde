"""How the project's own subprocesses are launched: the environment they inherit.

Its own module so that the manager, the sampler and the notifier share it without importing
each other.
"""

from __future__ import annotations

import argparse
import os


def package_env() -> dict[str, str]:
    """The environment for our subprocesses: they import this very copy of the package."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return dict(os.environ)  # installed: importable anyway; never put site-packages first
    path = os.environ.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root] + [p for p in parts if p != root])}


def supervisor_arguments(prog: str) -> argparse.ArgumentParser:
    """The command line of a supervisor: runs/supervisor.py, and the Slurm job's (runs/job_supervisor.py)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("run_dir")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    return parser
