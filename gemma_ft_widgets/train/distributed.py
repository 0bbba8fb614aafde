"""One trainer process among several (jax.distributed), and the few things that differ then.

The supervisor starts `num_processes` trainers and tells each, in its environment
(contract.COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV), where process 0's coordination
service listens and which process it is. `initialize()` runs before anything touches a device;
afterwards `jax.devices()` lists the devices of every process, so the 1-D data mesh of
train/sharding.py spans them all and the jitted step is one SPMD program over all of them.
On the CPU the cross-process collectives run over gloo.

What changes in the trainer with more than one process:
- Arrays are built from host data with `put()`: each process transfers only the shards its
  own devices hold (of the same global batch, a pure function of (seed, step) that every
  process computes itself).
- Only process 0 writes metrics.jsonl, TensorBoard events and status lines (`is_chief()`).
- A stop signal may reach the processes between different steps, and every collective must
  be entered by all of them: `AgreedStop` combines the flags of all processes once per step,
  so all stop after the same step and save the same checkpoint.
- Checkpoints are saved synchronously by all processes (checkpoints.SyncSaver).
"""

from __future__ import annotations

import os
import signal

import numpy as np

from .. import contract

# How long process 0 waits for the others to join; a peer that never comes (it failed at
# import) is the supervisor's to report, which ends the run long before this.
INIT_TIMEOUT_S = 300


def settings() -> tuple[str, int, int] | None:
    """(coordinator address, number of processes, this process's id) when this trainer is one
    of several, else None. A malformed environment is a setup error, never a silent 1.
    Under a scheduler (contract.DISTRIBUTED_ENV=auto) the address is "auto": jax reads them
    from the scheduler's environment (SLURM_* for Slurm)."""
    if os.environ.get(contract.DISTRIBUTED_ENV) == "auto":
        return "auto", 0, 0
    raw = os.environ.get(contract.NUM_PROCESSES_ENV)
    if not raw or raw == "1":
        return None
    try:
        n, k = int(raw), int(os.environ.get(contract.PROCESS_ID_ENV, ""))
    except ValueError:
        raise ValueError(f"{contract.NUM_PROCESSES_ENV}={raw!r} and {contract.PROCESS_ID_ENV}="
                         f"{os.environ.get(contract.PROCESS_ID_ENV)!r} must be integers") from None
    coordinator = os.environ.get(contract.COORDINATOR_ENV, "")
    if not 0 <= k < n or not coordinator:
        raise ValueError(f"process id {k} of {n} with coordinator {coordinator!r} is not a valid setting")
    return coordinator, n, k


def initialize() -> int:
    """Join the other processes of this run (if any); returns the number of processes."""
    s = settings()
    if s is None:
        return 1
    import jax

    coordinator, n, k = s
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # jax's preemption service installs its own SIGTERM handler over the trainer's StopFlag, so
    # a SIGTERM (Slurm's scancel, the supervisor's escalation) never reached the loop and the
    # trainers ran on until SIGKILL. Stops are ours: AgreedStop combines them every step.
    jax.config.update("jax_enable_preemption_service", False)
    if coordinator == "auto":  # jax's cluster detection (SlurmCluster: SLURM_JOB_ID, SLURM_PROCID, ...)
        jax.distributed.initialize(initialization_timeout=INIT_TIMEOUT_S)
        return jax.process_count()
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=k,
                               initialization_timeout=INIT_TIMEOUT_S)
    return n


def shutdown() -> None:
    """Leave together (a barrier): a process that exits while a peer still talks to the
    coordination service would make that peer fail. Only after a clean end of all of them."""
    import jax

    if jax.process_count() > 1:
        jax.distributed.shutdown()


def process_count() -> int:
    """jax.process_count(): how many trainer processes the run has."""
    import jax

    return jax.process_count()


def is_chief() -> bool:
    """Whether this is process 0, the one that writes metrics.jsonl, TensorBoard events and status lines."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing in a single-process run)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def put(tree, shardings):
    """`jax.device_put(tree, shardings)`, also for shardings that span other processes' devices:
    then each process builds the global arrays from its own host copy of the same values and
    transfers only the slices of its local devices (`jax.make_array_from_callback`)."""
    import jax

    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(one, tree, shardings)
    return jax.tree.map(lambda x: one(x, shardings), tree)


class AgreedStop:
    """The stop flags of every process, combined once per step (`refresh()`): `requested` and
    `hard` are the same in all processes between two refreshes, so they all leave the loop after
    the same step, and an eval is cut short (SIGTERM) in all of them or in none."""

    LEVELS = {None: 0, signal.SIGINT: 1, signal.SIGTERM: 2}

    def __init__(self, flag):
        self.flag = flag
        self._level = 0

    def refresh(self) -> None:
        """Combine every process's stop flag (the strongest wins); a collective, so all call it at the same step."""
        from jax.experimental import multihost_utils

        mine = np.int32(self.LEVELS.get(self.flag.signum, 1))
        self._level = max(self._level, int(np.max(multihost_utils.process_allgather(mine))))

    @property
    def signum(self):
        """The agreed stop signal: None, SIGINT or SIGTERM."""
        return {0: None, 1: signal.SIGINT, 2: signal.SIGTERM}[self._level]

    @property
    def requested(self) -> bool:
        """Whether any process was asked to stop."""
        return self._level > 0

    @property
    def hard(self) -> bool:
        """Whether any process got SIGTERM: stop without the final eval."""
        return self._level == 2
