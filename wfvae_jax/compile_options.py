"""Per-backend XLA compiler options for the model's top-level jitted functions.

XLA:CPU (jax 0.10) hands convolutions, with the norms, activations and sums around them, to
YNNPACK as "ynn fusions". A fusion's intermediates (each conv2d tap of a k_t causal conv, the
norm's ``x - mean``) are allocated by YNNPACK at run time, outside XLA's buffer plan, and its
convolutions ran slower than XLA's own (Eigen) ones at this model's shapes. With YNN fusions off
(``xla_cpu_experimental_ynn_fusion_type=""``), WF-VAE-S encode of 1x33x256^2 fp32 peaked 801 MiB
above the pre-call RSS instead of 1,919 MiB (XLA's plan: 718 MiB) and ran 1.3x faster; the
figures for every configuration are in ``docs/performance.md`` ("YNNPACK fusions").

The options are chosen per backend at call time (not at import: asking for the backend at
import would initialise it before a multi-host job's ``jax.distributed.initialize``). GPU and
TPU get none. Under an outer ``jax.jit`` (a training step) only the outer function's options
apply. To compare or to opt out, edit :data:`CPU` before the first call, e.g.
``wfvae_jax.compile_options.CPU.clear()`` restores XLA's defaults.

Source: measured on this project's 2-core x86-64 CPU (``benchmarks/profile_memory.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax._src import core as jax_core  # trace_state_clean: no public equivalent in jax 0.10

CPU: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""Compiler options for XLA:CPU compiles of :func:`jit` functions (read at their first call)."""

CPU_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
"""Added for direct encode only: its peak fell 809 -> 690 MiB above the pre-call RSS at the same
time; the decoder's plan grew with it (1,956 -> 2,214 MiB direct, 1,486 -> 3,158 chunked)."""


def options(backend: str, cpu_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The compiler options :func:`jit` uses on ``backend`` ("cpu", "gpu", "tpu", ...)."""
    return {**CPU, **(cpu_extra or {})} if backend == "cpu" else {}


def jit(
    fun: Callable | None = None, *, cpu_extra: dict[str, Any] | None = None, **jit_kwargs: Any
) -> Any:
    """``jax.jit(fun, **jit_kwargs)``, compiled with :func:`options` of the default backend.

    Returns a callable with ``.lower`` like a jitted function; usable as
    ``@jit(static_argnames=...)``. ``cpu_extra`` adds options on CPU for this function only.
    Called under another transformation's trace (an outer ``jax.jit``, ``vmap``, ``grad``) it
    is a plain ``jax.jit``: jax accepts compiler options only on a top-level jit, and the outer
    computation's options are the ones compiled then.
    """
    if fun is None:
        return functools.partial(jit, cpu_extra=cpu_extra, **jit_kwargs)
    plain = jax.jit(fun, **jit_kwargs)
    tuned: dict[str, Any] = {}

    def pick() -> Any:
        if not jax_core.trace_state_clean():
            return plain
        backend = jax.default_backend()
        if backend not in tuned:
            opts = options(backend, cpu_extra)
            tuned[backend] = jax.jit(fun, compiler_options=opts, **jit_kwargs) if opts else plain
        return tuned[backend]

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        return pick()(*args, **kwargs)

    call.lower = lambda *args, **kwargs: pick().lower(*args, **kwargs)
    return call
