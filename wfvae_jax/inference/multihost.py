"""Starting JAX's multi-controller runtime (one process per host) for our commands.

``jax.distributed.initialize()`` finds the coordinator, process count and process id itself on
TPU pods, SLURM, Open MPI and Kubernetes. Elsewhere (e.g. several processes on one machine) it
reads only ``JAX_COORDINATOR_ADDRESS`` (and ``JAX_LOCAL_DEVICE_IDS``); :func:`initialize` also
passes ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` when they are set, so the same command works
there. CPU processes exchange data with the gloo collectives (set before the backend starts,
unless the user chose an implementation).
"""

from __future__ import annotations

import os

import jax


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
