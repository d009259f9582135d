"""Per-backend XLA compiler options for the model's top-level jitted functions.

XLA:CPU (jax 0.10) hands convolutions, with the norms, activations and sums around them, to
YNNPACK as "ynn fusions". A fusion's intermediates (each conv2d tap of a k_t causal conv, the
norm's ``x - mean``) are allocated by YNNPACK at run time, outside XLA's buffer plan, and its
convolutions run slower than XLA's own (Eigen) ones at this model's shapes. With YNN fusions off
(``xla_cpu_experimental_ynn_fusion_type=""``) every intermediate is in XLA's plan, and WF-VAE's
peak memory and run time both fall; the figures are in ``docs/performance.md`` ("YNNPACK
fusions").

The options are chosen per backend at call time (not at import: asking for the backend at
import would initialise it before a multi-host job's ``jax.distributed.initialize``). GPU and
TPU get none. Under an outer ``jax.jit`` (a training step) only the outer function's options
apply. To compare or to opt out, edit :data:`CPU` before the first call, e.g.
``wfvae_jax.core.compile_options.CPU.clear()`` restores XLA's defaults.

Compiles also leave their freed working memory (LLVM's, XLA's passes') in glibc's arenas, where
RSS keeps counting it until the process ends. :data:`TRIM_AFTER_COMPILE` hands it back after
every compile of at least :data:`TRIM_MIN_COMPILE_S` (a jax monitoring listener, installed by
the first :func:`jit` call; glibc only, elsewhere a no-op).

Source: ``benchmarks/profile_memory.py`` measures these choices; its figures are in
``docs/performance.md``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
from jax._src import core as jax_core  # trace_state_clean: no public equivalent in jax 0.10

CPU: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""Compiler options for XLA:CPU compiles of :func:`jit` functions (read at their first call)."""

CPU_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
"""Added for direct encode only: XLA's memory-optimised scheduler lowers that program's peak at
the same speed, but raises the decoder's (direct and chunked), so the decoder does without it
(``docs/performance.md``)."""


TRIM_AFTER_COMPILE = True
"""Return freed heap memory to the OS after each long compile (read at the first :func:`jit`
call; set ``False`` before it to opt out)."""

TRIM_MIN_COMPILE_S = 1.0
"""Compiles shorter than this (seconds) are not followed by a trim: they leave little, and a
trim walks the whole heap (tens of ms on a large one)."""

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch
_trim_lock = threading.Lock()
_trim_installed = False


def _malloc_trim() -> Callable[[], Any] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return functools.partial(ctypes.CDLL(name).malloc_trim, 0) if name else None
    except (OSError, AttributeError):
        return None


def install_trim_after_compile() -> bool:
    """Installs (once per process) the listener that trims the heap after long compiles.

    It runs after XLA returns the executable (from the compiler or the persistent cache) and
    before jax first executes it. Returns whether a listener is installed.
    """
    global _trim_installed
    with _trim_lock:
        if not _trim_installed:
            trim = _malloc_trim()
            if trim is None:
                return False

            def on_duration(event: str, duration: float, **_: Any) -> None:
                if event == _BACKEND_COMPILE_EVENT and duration >= TRIM_MIN_COMPILE_S:
                    trim()

            jax.monitoring.register_event_duration_secs_listener(on_duration)
            _trim_installed = True
    return True


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
        if TRIM_AFTER_COMPILE and not _trim_installed:
            install_trim_after_compile()
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
