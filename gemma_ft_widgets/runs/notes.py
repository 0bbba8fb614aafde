"""A run's note: free text the user keeps with the run, in its folder (contract.NOTE_NAME)."""

from __future__ import annotations

import os

from .. import contract
from .errors import RunError

MAX_NOTE_CHARS = 10_000


def read_note(run_dir: str) -> str:
    """The run's note, '' when it has none (or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, contract.NOTE_NAME), encoding="utf-8", errors="replace") as f:
            return f.read(MAX_NOTE_CHARS).strip()
    except OSError:
        return ""


def write_note(run_dir: str, text: str) -> str:
    """Keep `text` as the run's note (an empty text removes the note file). Returns the note
    as stored. RunError when the folder is gone or not writable, or the text is too long."""
    text = (text or "").strip()
    if len(text) > MAX_NOTE_CHARS:
        raise RunError(f"the note has {len(text):,} characters; at most {MAX_NOTE_CHARS:,}")
    if not os.path.isdir(run_dir):
        raise RunError(f"run folder {run_dir} no longer exists")
    path = os.path.join(run_dir, contract.NOTE_NAME)
    try:
        if text:
            contract.atomic_write_text(path, text + "\n")
        elif os.path.exists(path):
            os.unlink(path)
    except OSError as e:
        raise RunError(f"cannot write the note of {os.path.basename(run_dir)}: {e.strerror or e}") from e
    return text
