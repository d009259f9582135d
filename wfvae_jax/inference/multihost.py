"""Starting JAX's multi-controller runtime (one process per host) for our commands, and the
small cross-process steps they share (a barrier, an all-gather of JSON, an any-of flag).

``jax.distributed.initialize()`` finds the coordinator, process count and process id itself on
TPU pods, SLURM, Open MPI and Kubernetes. Elsewhere (e.g. several processes on one machine) it
reads only ``JAX_COORDINATOR_ADDRESS`` (and ``JAX_LOCAL_DEVICE_IDS``); :func:`initialize` also
passes ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` when they are set, so the same command works
there. CPU processes exchange data with the gloo collectives (set before the backend starts,
unless the user chose an implementation).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize() -> None:
    """Calls ``jax.distributed.initialize`` with the environment's settings (see module doc).

    Must run before anything touches a JAX device. Raises whatever ``jax.distributed`` raises
    for a missing or unreachable coordinator (a ValueError/RuntimeError naming it).
    """
    if jax.config.jax_cpu_collectives_implementation is None:
        # Without a CPU collectives implementation, CPU processes cannot exchange arrays.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


def sync_processes(name: str) -> None:
    """Waits until every process reached the barrier ``name`` (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def allgather_json(obj: Any) -> list[Any]:
    """Every process's ``obj`` (JSON-serialisable), in process order."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    return [
        json.loads(bytes(gathered[i, : int(sizes[i, 0])]).decode())
        for i in range(jax.process_count())
    ]


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (one small all-gather with several)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.asarray([int(flag)], np.int32)).max())
