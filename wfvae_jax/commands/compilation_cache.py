"""JAX's persistent compilation cache for the commands: a second run skips most of its compile.

``$WFVAE_JAX_CACHE_DIR`` (default ``~/.cache/wfvae_jax/xla``) holds it; a
``JAX_COMPILATION_CACHE_DIR`` of the user's own wins and ``WFVAE_JAX_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import os
import sys

CACHE_DIR_ENV = "WFVAE_JAX_CACHE_DIR"
NO_CACHE_ENV = "WFVAE_JAX_NO_CACHE"
# Executables that took less than this to compile are not cached (jax's default is 1 s; on CPU
# the model's jits take 1-60 s, the small helper jits well under 0.5 s).
CACHE_MIN_COMPILE_S = 0.5


def default_cache_dir() -> str:
    """``$WFVAE_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/wfvae_jax/xla`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.path.expanduser(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wfvae_jax", "xla")


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for this process; returns its directory.

    The directory is :func:`default_cache_dir`, or the one the user gave JAX itself
    (``JAX_COMPILATION_CACHE_DIR``), which wins. Executables that compiled in at least
    ``CACHE_MIN_COMPILE_S`` seconds are stored there and reused by later runs with the same
    jax version, backend, shapes and code. ``WFVAE_JAX_NO_CACHE=1`` turns it off (returns None),
    and so does a directory that cannot be created (no error: the command runs uncached).
    Child processes inherit the setting when jax is not imported yet (it is passed through
    ``JAX_*`` environment variables, which jax reads at import).
    """
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    jax = sys.modules.get("jax")
    given = (
        jax.config.jax_compilation_cache_dir if jax else os.environ.get("JAX_COMPILATION_CACHE_DIR")
    )
    path = given or default_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if jax is None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
        os.environ.setdefault(
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(CACHE_MIN_COMPILE_S)
        )
    elif not given:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    return path
