"""Orbax checkpoints in RUN_DIR/checkpoints/step_<N>/.

Layout of one checkpoint:

    step_<N>/state/        orbax StandardCheckpointer: {"params": trainable params,
                           "opt_state": optax state, "step": N, "data_position": N*B}
    step_<N>/meta.json     for humans and tools: step, data_position, epoch, method,
                           config_hash, saved_at, loss

Atomicity: everything is written under `checkpoints/.partial-step_<N>-<pid>/` and renamed to
`step_<N>` only once orbax has finished and meta.json is fsynced. A save interrupted halfway
leaves a `.partial-*` folder, which `contract.checkpoint_steps()` ignores and the next start
removes; the previous good checkpoint is never touched until a newer one is complete.
Pruning keeps the newest `keep` checkpoints.

Background saves (`BackgroundSaver`, what the training loop uses): the loop waits only for a
host copy of the state (the device buffers are donated to the next step); a thread then
writes, fsyncs, renames and prunes as above. At most one save is in flight: the next save and
`wait()` (the final save, exit) wait for it, and a failed save's exception is raised in the
loop's thread by the next `check()`, `submit()` or `wait()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time

import jax
import numpy as np

from .. import contract

PARTIAL_PREFIX = ".partial-"
STATE_DIR = "state"
META_NAME = "meta.json"


_IMPLIED = {"lr_schedule": "cosine", "weight_decay": 0.01, "max_grad_norm": 1.0, "grad_accum_steps": 1,
            "lora_dropout": 0.0}


def config_hash(config_dict: dict) -> str:
    """Hash of the fields that decide the training trajectory (not logging/keep counts)."""
    ignore = {"log_every", "keep_checkpoints", "checkpoint_every", "eval_every", "run_name", "tags",
              "num_processes"}  # the same trajectory on any number of processes
    # Fields added later hash as absent at the value every run had before them, so a run
    # started before they existed resumes without a "different config" warning.
    implied = {**_IMPLIED, "lora_alpha": config_dict.get("lora_rank")}
    data = {k: v for k, v in sorted(config_dict.items())
            if k not in ignore and not (k in implied and v == implied[k])}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _checkpointer():
    """orbax's StandardCheckpointHandler behind a synchronous Checkpointer: the layout of
    `ocp.StandardCheckpointer()` without its own commit thread (saves already run on ours)."""
    from orbax import checkpoint as ocp

    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


@jax.jit
def _nonfinite(tree):
    leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)]
    return sum((jax.numpy.size(x) - jax.numpy.isfinite(x).sum() for x in leaves), jax.numpy.int32(0))


def nonfinite_count(tree) -> int:
    """How many NaN/Infinity values the float arrays of `tree` hold (one reduction on device)."""
    return int(_nonfinite(tree))


def clean_partials(run_dir: str) -> list[str]:
    """Delete the half-written checkpoints (ours and orbax's temporary folders) an interrupted save
    left; returns their names."""
    root = os.path.join(run_dir, contract.CHECKPOINTS_DIR)
    removed = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith(PARTIAL_PREFIX) or ".orbax-checkpoint-tmp" in name:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(name)
    return removed


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(run_dir: str, step: int, params, opt_state, data_position: int, meta: dict, keep: int,
         checkpointer=None) -> str:
    """Write checkpoint `step` atomically, prune to the newest `keep`. Returns its path.
    `checkpointer`: an orbax Checkpointer to reuse (a fresh one is made and closed otherwise)."""
    root = os.path.join(run_dir, contract.CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        os.mkdir(root)  # never makedirs: a run folder moved or deleted meanwhile is not re-created
    final = contract.checkpoint_path(run_dir, step)
    tmp = os.path.join(root, f"{PARTIAL_PREFIX}{contract.CHECKPOINT_PREFIX}{step}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tree = {"params": params, "opt_state": opt_state, "step": np.int64(step),
            "data_position": np.int64(data_position)}
    ckpt = checkpointer or _checkpointer()
    ckpt.save(os.path.join(tmp, STATE_DIR), tree)  # complete when it returns
    if checkpointer is None:
        ckpt.close()
    contract.atomic_write_json(os.path.join(tmp, META_NAME),
                               {"step": step, "data_position": data_position, **meta})
    _fsync_dir(tmp)
    if os.path.exists(final):  # the same step saved again (e.g. stop right after a save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune(run_dir, keep)
    return final


def host_copy(tree):
    """A host (numpy) copy of a tree of arrays, taken now and owned by the caller (the device
    buffers are donated to the next step). `jax.device_get` starts every transfer before
    waiting for any; on the CPU backend its arrays may alias the device buffers, so those are
    copied once more."""
    def own(x, host):
        if isinstance(x, jax.Array) and any(d.platform != "cpu" for d in x.devices()):
            return host  # a fresh host buffer already
        return np.array(host, copy=True)

    return jax.tree.map(own, tree, jax.device_get(tree))


class BackgroundSaver:
    """Checkpoint saves off the training loop's thread, at most one in flight.

    `submit()` waits for the previous save (raising its error), copies the state to host, and
    starts a thread that runs `save()` and then `on_done(path, seconds)` (the loop writes its
    `checkpoint` event there: after the rename, so an event always names a complete
    checkpoint). An exception of that thread is kept and raised in the caller's thread by the
    next `check()` (cheap: the loop calls it every step), `submit()` or `wait()`.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._checkpointer = None  # one orbax Checkpointer for all saves (~5 ms less each)

    def submit(self, run_dir: str, step: int, params, opt_state, data_position: int, meta: dict,
               keep: int, on_done=None) -> str:
        """Wait for the previous save, copy the state to host, and save it in a thread; returns the
        path step_N will have (see the class docstring)."""
        self.wait()
        t0 = time.time()
        params, opt_state = host_copy((params, opt_state))

        if self._checkpointer is None:
            self._checkpointer = _checkpointer()
        checkpointer = self._checkpointer

        def work():
            try:
                path = save(run_dir, step, params, opt_state, data_position, meta, keep, checkpointer)
                if on_done is not None:
                    on_done(path, time.time() - t0)
            except BaseException as e:  # noqa: BLE001 - re-raised in the loop's thread
                self._error = e

        self._thread = threading.Thread(target=work, name=f"checkpoint-step_{step}", daemon=True)
        self._thread.start()
        return contract.checkpoint_path(run_dir, step)

    @property
    def in_flight(self) -> bool:
        """Whether a save thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Raise the exception of a finished save that failed (does not wait)."""
        if self._error is not None:
            err, self._error = self._error, None
            self._thread = None
            raise err

    def wait(self) -> None:
        """Wait for the save in flight, if any; raise its exception if it failed."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        self.check()

    def close(self) -> None:
        """Release the orbax Checkpointer (after `wait()`; a later submit makes a new one)."""
        if self._checkpointer is not None and not self.in_flight:
            self._checkpointer.close()
            self._checkpointer = None


def save_all_processes(run_dir: str, step: int, params, opt_state, data_position: int, meta: dict,
                       keep: int) -> str:
    """`save()` for a run of several processes, called by every one of them at the same step:
    orbax writes each process's shards of the global arrays into the same `.partial-` folder;
    process 0 alone writes meta.json, renames and prunes, between barriers, so that when this
    returns step_N is complete for every process (a resume on all of them finds the same N)."""
    from . import distributed

    root = os.path.join(run_dir, contract.CHECKPOINTS_DIR)
    final = contract.checkpoint_path(run_dir, step)
    tmp = os.path.join(root, f"{PARTIAL_PREFIX}{contract.CHECKPOINT_PREFIX}{step}-all")
    chief = distributed.is_chief()
    if chief:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    distributed.barrier(f"checkpoint-{step}-folder")
    tree = {"params": params, "opt_state": opt_state, "step": np.int64(step),
            "data_position": np.int64(data_position)}
    ckpt = _checkpointer()
    ckpt.save(os.path.join(tmp, STATE_DIR), tree)  # orbax's own barriers: every shard is written
    ckpt.close()
    distributed.barrier(f"checkpoint-{step}-written")
    if chief:
        contract.atomic_write_json(os.path.join(tmp, META_NAME),
                                   {"step": step, "data_position": data_position, **meta})
        _fsync_dir(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        prune(run_dir, keep)
    distributed.barrier(f"checkpoint-{step}-renamed")
    return final


class SyncSaver:
    """BackgroundSaver's interface for runs of several processes: `submit()` saves there and
    then, with every process (`save_all_processes`). A host copy in a thread, as one process
    does it, cannot hold the shards of other processes; orbax's multi-process save needs all
    of them to take part, so the loop waits for the save (docs/multihost.md)."""

    in_flight = False

    def submit(self, run_dir: str, step: int, params, opt_state, data_position: int, meta: dict,
               keep: int, on_done=None) -> str:
        """Save now with every process (`save_all_processes`), then call `on_done(path, seconds)`; returns the path."""
        t0 = time.time()
        path = save_all_processes(run_dir, step, params, opt_state, data_position, meta, keep)
        if on_done is not None:
            on_done(path, time.time() - t0)
        return path

    def check(self) -> None:
        """Nothing to check: no save runs in the background."""
        pass

    def wait(self) -> None:
        """Nothing to wait for: `submit()` returns when the save is complete."""
        pass

    def close(self) -> None:
        """Nothing to release: each save makes and closes its own Checkpointer."""
        pass


def saved_processes(path: str) -> int:
    """How many processes wrote a checkpoint (1 for one written before multi-process runs)."""
    n = read_meta(path).get("num_processes", 1)
    return n if isinstance(n, int) and n >= 1 else 1


def prune(run_dir: str, keep: int) -> list[int]:
    """Delete all but the newest `keep` checkpoints (none when `keep` <= 0); returns the removed steps."""
    steps = contract.checkpoint_steps(run_dir)
    removed = steps[:-keep] if keep > 0 else []
    for s in removed:
        shutil.rmtree(contract.checkpoint_path(run_dir, s), ignore_errors=True)
    return removed


def latest(run_dir: str) -> int | None:
    """The newest checkpoint's step, or None when the run has none."""
    steps = contract.checkpoint_steps(run_dir)
    return steps[-1] if steps else None


def read_meta(path: str) -> dict:
    """A checkpoint's meta.json; {} when it is missing or unreadable."""
    try:
        return contract.read_json(os.path.join(path, META_NAME))
    except (FileNotFoundError, ValueError):
        return {}


def restore(path: str, params_like, opt_state_like):
    """(params, opt_state, step, data_position) restored onto the shardings of the templates.

    The templates may be real arrays or jax.ShapeDtypeStruct with shardings.
    """
    def abstract(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    target = {"params": jax.tree.map(abstract, params_like),
              "opt_state": jax.tree.map(abstract, opt_state_like),
              "step": np.zeros((), np.int64), "data_position": np.zeros((), np.int64)}
    ckpt = _checkpointer()
    out = ckpt.restore(os.path.join(path, STATE_DIR), target)
    ckpt.close()
    return out["params"], out["opt_state"], int(out["step"]), int(out["data_position"])


class DamagedCheckpoint(Exception):
    """A checkpoint that does not restore, or restores to something unusable."""


def restore_verified(path: str, params_like, opt_state_like, expected_step: int):
    """`restore`, then checked: its step is the folder's and every value is finite. Raises
    DamagedCheckpoint with the reason (orbax/TensorStore errors name no checkpoint)."""
    try:
        params, opt_state, step, position = restore(path, params_like, opt_state_like)
    except Exception as e:  # noqa: BLE001 - truncated files, missing metadata, wrong shapes...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedCheckpoint(f"{type(e).__name__}: {first[:300]}") from e
    if step != expected_step:
        raise DamagedCheckpoint(f"it holds step {step}, not {expected_step}")
    bad = nonfinite_count((params, opt_state))
    if bad:
        raise DamagedCheckpoint(f"{bad:,} non-finite values")
    return params, opt_state, step, position


def restore_params(path: str, params_like):
    """Only the trainable params of a checkpoint (sampling, export); the optimizer state is
    not read (orbax partial restore)."""
    from orbax import checkpoint as ocp

    def restore_arg(x):
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return ocp.ArrayRestoreArgs(sharding=sharding, dtype=x.dtype, global_shape=x.shape)

    def abstract(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    item = {"params": jax.tree.map(abstract, params_like)}
    restore_args = {"params": jax.tree.map(restore_arg, params_like)}
    with ocp.PyTreeCheckpointer() as pc:
        out = pc.restore(os.path.join(path, STATE_DIR), args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True))
    return out["params"]
