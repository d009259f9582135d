"""How every command-line tool reports a user mistake: one ``error:`` line plus a hint, exit 2.

A user error (a missing file, a bad flag value, a config typo) is raised as
:class:`wfvae_jax.errors.UserError` or as one of :data:`wfvae_jax.errors.USER_ERRORS` by the
library, and :func:`run` prints it as::

    error: --num_frames must be 1 + 4k, got 32; nearest valid is 33
    hint: pass --num_frames 33

Only an unexpected failure prints a traceback; ``--debug`` always does. Ctrl-C prints
``error: interrupted (Ctrl-C)`` (plus, as the hint, what the command's ``on_interrupt`` says, e.g.
which checkpoint to resume from) and exits 130, the shell's status for SIGINT.

A command run from the command line also gets JAX's persistent compilation cache
(:func:`wfvae_jax.commands.compilation_cache.enable_compilation_cache`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from wfvae_jax.commands.compilation_cache import enable_compilation_cache
from wfvae_jax.commands.extras import extra_for_package, install_hint
from wfvae_jax.errors import USER_ERRORS, UserError, debug_enabled, debug_scope


def missing_package_error(e: ModuleNotFoundError) -> UserError | None:
    """A :class:`UserError` naming the pip extra of an optional package that is not installed
    (:func:`wfvae_jax.commands.extras.extra_for_package`), else ``None``."""
    top = (e.name or "").split(".")[0]
    extra = extra_for_package(top)
    if extra is None:
        return None
    return UserError(
        f"this needs the Python package {top!r} (not installed)", hint=install_hint(extra)
    )


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
    if compilation_cache or (compilation_cache is None and argv is None):
        enable_compilation_cache()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    argv = [a for a in argv if a != "--debug"]
    with debug_scope(debug):
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
    sys.exit(rc if isinstance(rc, int) and not isinstance(rc, bool) else 0)
