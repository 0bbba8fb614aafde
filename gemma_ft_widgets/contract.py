"""The run folder contract: file names, exit codes and safe file I/O.

Stdlib only. Every layer that reads or writes a run folder (runs/, train/, ui/ through runs/)
uses these names and helpers, so the on-disk format lives in one place. See
docs/ARCHITECTURE.md for the schema of each file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

# Workspace level.
LOCK_NAME = ".training.lock"
LOCK_GUARD_NAME = ".training.lock.guard"  # flock()ed around every lock mutation
DEFAULT_WORKSPACE = "gemma_ft_runs"
WORKSPACE_ENV = "GEMMA_FT_WORKSPACE"
QUEUE_NAME = ".queue.json"  # runs waiting for the active-run slot (runs/queue.py)
QUEUE_GUARD_NAME = ".queue.json.guard"  # flock()ed around every queue change
SAMPLERS_DIR = ".samplers"  # <pid>.json per warm playground sampler (runs/warm_sampler.py)
SETTINGS_NAME = "settings.json"  # workspace settings, e.g. {"notify": URL}
ATTEMPT_ENV = "GEMMA_FT_ATTEMPT"  # tells the trainer which attempt it is (1 + resumes)
TRAINER_ENV = "GEMMA_FT_TRAINER"  # python module run as the trainer (tests use a simulated one)
DEFAULT_TRAINER = "gemma_ft_widgets.train"
# Multi-process runs (num_processes > 1): the supervisor tells each trainer where the
# jax.distributed coordinator is and which process it is (train/distributed.py).
COORDINATOR_ENV = "GEMMA_FT_COORDINATOR"  # host:port of process 0's coordination service
NUM_PROCESSES_ENV = "GEMMA_FT_NUM_PROCESSES"
PROCESS_ID_ENV = "GEMMA_FT_PROCESS_ID"
# "auto": a scheduler started the trainers (runs/job_supervisor.py); jax.distributed detects
# the coordinator, the process count and id from the scheduler's environment.
DISTRIBUTED_ENV = "GEMMA_FT_DISTRIBUTED"
# CPU only: forced host devices per trainer process (XLA's --xla_force_host_platform_device_count),
# read by the supervisor; how one machine stands in for several hosts in tests and benchmarks.
CPU_DEVICES_ENV = "GEMMA_FT_CPU_DEVICES_PER_PROCESS"

# Run folder level.
CONFIG_NAME = "model_config.json"
STATUS_LOG_NAME = "status.log"
METRICS_NAME = "metrics.jsonl"
STDOUT_NAME = "trainer_stdout.log"
STDERR_NAME = "trainer_stderr.log"


def process_log_name(name: str, process: int) -> str:
    """Process k > 0 of a multi-process run logs to trainer_stdout.p<k>.log (process 0 keeps
    the plain names, which every tool reads)."""
    if process == 0:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}.p{process}{ext}"


PROCESSES_DIR = "processes"  # multi-process runs: one report per trainer process


def process_report_rel(process: int) -> str:
    """processes/process-<k>.json: process k's own devices and memory (every process writes its
    own, so a run across hosts on a shared filesystem shows them all; see train/process_report.py)."""
    return f"{PROCESSES_DIR}/process-{process}.json"


SUPERVISOR_LOG_NAME = "supervisor.log"
RESULT_NAME = "result.json"
STOP_REQUEST_NAME = "stop_request.json"
RESULT_ATTEMPT_RE = re.compile(r"result\.attempt-(\d+)\.json")  # an earlier attempt's result.json, set aside
NOTE_NAME = "note.txt"  # the user's note on a run, edited in the panel's run table (runs/notes.py)
METRICS_CSV_NAME = "metrics.csv"  # metrics.jsonl's step and eval events as CSV, written on request
RUN_INFO_NAME = "run_info.json"  # {"name", "group", "queue_id"} of a run started by name or by the queue
NOTIFIED_PREFIX = ".notified-attempt-"  # + K: the webhook for attempt K's ending was sent (once)
CHECKPOINTS_DIR = "checkpoints"
UPLOADS_DIR = "uploads"  # workspace level: datasets uploaded through the panel's form
CHECKPOINT_PREFIX = "step_"
RUN_FLOCK_NAME = ".run.flock"  # flock()ed by the supervisor and trainer of a live attempt (runs/liveness.py)

# Subprocesses that report phases (sampler, exporter) print them to stderr as this + PHASE.
PROGRESS_PREFIX = "progress: "


def result_attempt_name(attempt: int | str) -> str:
    """The file name of one attempt's result, kept beside result.json."""
    return f"result.attempt-{attempt}.json"


# Event kinds of metrics.jsonl that its readers fold (runs/metrics.py, ui/series.py); the
# trainers write others too (docs/ARCHITECTURE.md lists every kind).
EVENT_START = "start"  # {attempt, resume_step, ...}: an attempt began (a resume truncates the curves)
EVENT_STEP = "step"  # {step, loss, lr, tokens_per_s, ...}: one optimizer step
EVENT_EVAL = "eval"  # {step, eval_loss}
EVENT_CHECKPOINT = "checkpoint"  # {step, path}: a checkpoint was saved
EVENT_FINAL = "final"  # {state, step}: how the trainers say the attempt ended
EVENT_DEVICES = "devices"  # {platform, device_kind, count, processes}: what the attempt runs on
EVENT_DATA = "data"  # the data's summary: examples, truncation (datasets.cut_note)
EVENT_COMPILE = "compile"  # {seconds}: the train step compiled
EVENT_SAMPLE = "sample"  # {step, prompt, reference, completion}: a greedy completion at an eval
EVENT_PHASE = "phase"  # {phase, ...progress}: what a STARTING trainer is doing (runs/phases.py)
# Workspace level: {shape key: seconds} of the last compile of the train step (train/phases.py).
COMPILE_TIMES_NAME = ".compile_times.json"
# Workspace level: JAX's persistent compilation cache of the workspace's runs and samplers
# (train/compile_cache.py); GEMMA_FT_COMPILE_CACHE=1 turns it on.
COMPILE_CACHE_DIR = ".jax_cache"
COMPILE_CACHE_ENV = "GEMMA_FT_COMPILE_CACHE"


# Trainer exit codes (besides 0 = finished).
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_ABORTED = 3  # stopped gracefully on SIGINT/SIGTERM after saving a checkpoint
EXIT_NO_ACCELERATOR = 4  # the machine has a GPU/TPU that jax does not see (and allow_cpu is off)
EXIT_DIVERGED = 5  # loss or gradient norm became NaN/Infinity; the last finite checkpoint is kept
EXIT_FOLDER_GONE = 6  # the run folder was moved or deleted while training; nothing re-created
NONFINITE_KEY = "nonfinite"  # {field: "NaN" | "Infinity" | "-Infinity"} next to the fields set to null


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds, as written in every file."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def strict(obj: Any) -> Any:
    """`obj` with every NaN/Infinity float replaced by None, so that it is strict JSON (bare NaN
    is not JSON: JavaScript's JSON.parse fails on it). A dict that had one says which field
    and what it was under NONFINITE_KEY."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out, flags = {}, {}
        for k, v in obj.items():
            if isinstance(v, float) and not math.isfinite(v):
                flags[k] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
                out[k] = None
            else:
                out[k] = strict(v)
        if flags:
            out[NONFINITE_KEY] = {**(out.get(NONFINITE_KEY) or {}), **flags}
        return out
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """json.dumps that never writes NaN or Infinity (see `strict`)."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:  # the rare line with a non-finite value pays for the walk
        return json.dumps(strict(obj), allow_nan=False, **kwargs)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """Write `text` so that readers see the old file or the new one, never a torn one."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        else:  # mkstemp makes 0600; give the file the user's umask like open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, mode: int | None = None) -> None:
    """Write `obj` as indented, sorted JSON that readers see whole or not at all (atomic_write_text)."""
    atomic_write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n", mode=mode)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file. Raises FileNotFoundError or ValueError (corrupt / truncated)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{os.fspath(path)}: not valid JSON ({e.msg} at char {e.pos})") from None


def append_jsonl(path: str | os.PathLike, obj: dict) -> None:
    """Append one JSON line with a single write(2) on an O_APPEND descriptor.

    A reader never sees half a line as complete: it only trusts text up to the last newline.
    """
    data = (dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class JsonlAppender:
    """`append_jsonl` on a descriptor kept open: one write(2) per line, on O_APPEND, so lines
    from several threads never interleave and readers see the same file (the trainer appends
    an event every step, and an open/close per line was a measurable part of a fast step)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, obj: dict) -> None:
        """Write one event as one line; ValueError after close()."""
        if self._fd is None:
            raise ValueError(f"{self.path}: appender is closed")
        os.write(self._fd, (dumps(obj, separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        """Close the descriptor; closing again does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def append_status(run_dir: str | os.PathLike, state: str, message: str = "") -> None:
    """One human-readable line per state transition in status.log."""
    line = f"{utc_now()} {state}" + (f" {message}" if message else "") + "\n"
    with open(os.path.join(run_dir, STATUS_LOG_NAME), "a", encoding="utf-8") as f:
        f.write(line)


class JsonlTail:
    """Incremental reader of an append-only JSON-lines file.

    Each `read_new()` reads only the bytes appended since the previous call and returns the
    complete lines parsed as dicts. A partial last line is kept for the next call; a corrupt
    line is skipped and counted in `corrupt_lines`, never raised.
    """

    def __init__(self, path: str | os.PathLike, offset: int = 0):
        self.path = os.fspath(path)
        self.offset = offset
        self.corrupt_lines = 0

    def read_new(self, max_bytes: int | None = None) -> list[dict]:
        """The complete lines appended since the last call, as dicts (at most `max_bytes` read); a
        replaced or truncated file is read from its start."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # file replaced or truncated: start over
                    self.offset = 0
                f.seek(self.offset)
                data = f.read() if max_bytes is None else f.read(max_bytes)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        chunk = data[: end + 1]
        self.offset += len(chunk)
        return list(self._parse(chunk))

    def _parse(self, chunk: bytes) -> Iterator[dict]:
        for raw in chunk.split(b"\n"):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                self.corrupt_lines += 1
                continue
            if isinstance(obj, dict):
                yield obj
            else:
                self.corrupt_lines += 1


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete, valid lines of a JSON-lines file ([] when it does not exist)."""
    return JsonlTail(path).read_new()


def tail_text(path: str | os.PathLike, max_lines: int = 50, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a text log, reading at most `max_bytes` from its end."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # first line is probably cut
    return "\n".join(lines[-max_lines:])


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints in a run folder, ascending.

    Only folders named exactly `step_<N>` count: orbax writes into a temporary name and renames
    on success, so a checkpoint interrupted halfway is never listed.
    """
    root = os.path.join(run_dir, CHECKPOINTS_DIR)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    steps = []
    for name in names:
        suffix = name[len(CHECKPOINT_PREFIX):]
        if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            if os.path.isdir(os.path.join(root, name)):
                steps.append(int(suffix))
    return sorted(steps)


def folder_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of a folder, None when there is none at `path`: a folder renamed away
    and another made under its name differ."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def where_now(fd: int) -> str | None:
    """The folder holding the file open on `fd` now (it follows a rename of the folder), or
    None when that file was deleted."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return None if target.endswith(" (deleted)") else os.path.dirname(target)


def checkpoint_name(step: int | str) -> str:
    """`step_N`: a checkpoint's folder name."""
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_rel(step: int | str) -> str:
    """`checkpoints/step_N`: how messages and result.json name a checkpoint (relative to the run)."""
    return f"{CHECKPOINTS_DIR}/{checkpoint_name(step)}"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> str:
    """The folder of step `step`'s checkpoint in a run."""
    return os.path.join(os.fspath(run_dir), CHECKPOINTS_DIR, checkpoint_name(step))


DAMAGED_SUFFIX = ".damaged"  # step_N.damaged: a checkpoint that failed to restore, kept for inspection
DAMAGED_NOTE = "DAMAGED.txt"


def mark_damaged(run_dir: str | os.PathLike, step: int, reason: str) -> str:
    """Rename step_N to step_N.damaged (no longer listed, never deleted) with the reason in
    DAMAGED.txt inside; returns its path relative to the run folder."""
    src = checkpoint_path(run_dir, step)
    dst, k = src + DAMAGED_SUFFIX, 1
    while os.path.exists(dst):
        k += 1
        dst = f"{src}{DAMAGED_SUFFIX}-{k}"
    os.rename(src, dst)
    try:
        with open(os.path.join(dst, DAMAGED_NOTE), "w", encoding="utf-8") as f:
            f.write(f"{utc_now()} not restorable: {reason}\n")
    except OSError:
        pass
    return os.path.relpath(dst, os.fspath(run_dir))
