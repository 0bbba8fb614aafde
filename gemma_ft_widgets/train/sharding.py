"""Device mesh and shardings: data parallel over every device, optional FSDP of the weights.

One 1-D mesh over `jax.devices()` with axis "data". The batch is split along it. Parameters
are replicated, or with FSDP each large array is split along its largest dimension that the
device count divides (the big_vision / kauldron `FSDPSharding` rule, here bound to our mesh
and with a size threshold we can lower in tests); XLA inserts the all-gathers. In LoRA runs
FSDP shards the frozen base (the adapters are small and stay replicated); in full fine-tuning
it shards the params and, following them, the optimizer state.

Multi-host: the same code runs one process per host after `jax.distributed.initialize()`;
`jax.devices()` then lists every chip of every host (see docs/multihost.md).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
FSDP_MIN_BYTES = 4 * 2**20  # arrays smaller than this stay replicated


def make_mesh(devices=None) -> Mesh:
    """The 1-D mesh (axis AXIS) over `devices`, by default every device."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """A sharding that splits the leading (batch) dimension over the mesh."""
    return NamedSharding(mesh, P(AXIS))


def fsdp_spec(shape, n: int, nbytes: int, min_bytes: int = FSDP_MIN_BYTES) -> P:
    """The FSDP PartitionSpec of one array: split along its largest dimension that `n` divides, or
    replicated when it is small or none does."""
    if n <= 1 or nbytes < min_bytes:
        return P()
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = AXIS
            return P(*spec)
    return P()


def fsdp_shardings(tree, mesh: Mesh, min_bytes: int = FSDP_MIN_BYTES):
    """The FSDP sharding of every array of a tree (see `fsdp_spec`)."""
    n = mesh.devices.size

    def one(x):
        nbytes = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        return NamedSharding(mesh, fsdp_spec(tuple(x.shape), n, nbytes, min_bytes))

    return jax.tree.map(one, tree)


def replicated_shardings(tree, mesh: Mesh):
    """A replicated sharding for every array of a tree."""
    rep = replicated(mesh)
    return jax.tree.map(lambda _: rep, tree)


def param_shardings(tree, mesh: Mesh, fsdp: bool, min_bytes: int = FSDP_MIN_BYTES):
    """The params' shardings: FSDP when `fsdp`, else replicated."""
    return fsdp_shardings(tree, mesh, min_bytes) if fsdp else replicated_shardings(tree, mesh)


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Place every array of a batch with `sharding`."""
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def describe(tree) -> dict[str, int]:
    """{'sharded': n arrays split over the mesh, 'replicated': n}: for logs and tests."""
    out = {"sharded": 0, "replicated": 0}
    for x in jax.tree.leaves(tree):
        spec = getattr(getattr(x, "sharding", None), "spec", P())
        out["sharded" if any(s is not None for s in spec) else "replicated"] += 1
    return out
