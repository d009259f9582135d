"""Shardings of the training state and batches on the one device mesh
(``wfvae_jax.inference.sharding.make_mesh(fsdp=F)``): data parallelism, optionally FSDP-sharded
state.

A batch is split over the batch axes ``("data", "fsdp")`` (every device gets
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

from wfvae_jax.inference.sharding import BATCH_AXES

# Arrays smaller than this stay replicated under FSDP: splitting them saves nothing measurable
# and costs a collective per use.
FSDP_MIN_SIZE = 2**14


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the batch axes, i.e. every device of a training mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


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
