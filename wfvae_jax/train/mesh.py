"""Device mesh and shardings for training: data parallelism, optionally FSDP-sharded state.

The mesh has two axes, ``("data", "fsdp")``. A batch is split over both (every device gets
``global_batch / num_devices`` videos). Parameters, EMA parameters and optimizer moments are
replicated when ``fsdp == 1`` (plain data parallelism); with ``fsdp > 1`` each large array is split
along its largest dimension divisible by ``fsdp`` over the ``"fsdp"`` axis (ZeRO-3 / FSDP style:
XLA all-gathers a layer's weights where it is used and reduce-scatters its gradient), which is
what WF-VAE-L needs on accelerators with little memory.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: splitting them saves nothing measurable
# and costs a collective per use.
FSDP_MIN_SIZE = 2**14


def make_mesh(fsdp: int = 1, devices: list | None = None) -> Mesh:
    """A ``(num_devices / fsdp, fsdp)`` mesh with axes ``("data", "fsdp")`` over all devices.

    Args:
      fsdp: devices that share one copy of the training state (1 = replicate it everywhere).
      devices: the devices to use (default ``jax.devices()``, i.e. every process's devices).
    Raises:
      ValueError: ``fsdp`` does not divide the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // fsdp, fsdp)
    return Mesh(grid, DATA_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of ``mesh``."""
    return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """The whole array on every device."""
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Partition spec of one state array: its largest ``fsdp``-divisible dim on ``"fsdp"``."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % fsdp == 0:
            spec = [None] * len(shape)
            spec[d] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    """``NamedSharding`` for every leaf of a (possibly abstract) state pytree.

    Replicated on a mesh whose ``"fsdp"`` axis has size 1; otherwise :func:`fsdp_spec` per leaf.
    Parameters and their Adam moments have equal shapes and so get equal shardings.
    """
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp)), abstract_state
    )


def global_batch(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global ``jax.Array`` from this process's part of the batch (its leading-axis slice).

    With several processes each passes the rows it read from its own data shard; the global
    batch is their concatenation in process order.
    """
    shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local, shape)
