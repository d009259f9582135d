"""The exceptions every layer raises for a user mistake, and the ``--debug`` switch.

A user error (a missing file, a bad flag value, a config typo) is raised as :class:`UserError` or
as one of :data:`USER_ERRORS`; :func:`wfvae_jax.commands.errors.run` prints it as one ``error:``
line and a ``hint:`` line. Library code that wants to show a traceback instead of a summary asks
:func:`debug_enabled`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DEBUG_ENV = "WFVAE_DEBUG"
_debug = False  # set while a command runs with --debug, for nested commands


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


def debug_enabled() -> bool:
    """Whether tracebacks are wanted: in :func:`debug_scope` (``--debug``) or ``WFVAE_DEBUG=1``."""
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def debug_scope(enabled: bool) -> Iterator[None]:
    """Within the block :func:`debug_enabled` is true if ``enabled`` or an outer scope was."""
    global _debug
    outer = _debug
    _debug = outer or enabled
    try:
        yield
    finally:
        _debug = outer
