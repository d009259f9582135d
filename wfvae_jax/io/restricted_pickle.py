"""Unpickling that runs no code: only an explicit allowlist of globals resolves.

Unpickling normally imports and calls any global the pickle names, so a hostile file can run
arbitrary code (``os.system``, ``builtins.eval``, ...). Here every pickle is read by
:class:`RestrictedUnpickler`, whose ``find_class`` resolves only the ``allowed`` mapping it is
given and raises :class:`~wfvae_jax.io.weight_files.CheckpointError` naming any other global.
``find_class`` is the only route by which a pickle can reach a callable (GLOBAL, STACK_GLOBAL, INST
and the EXT opcodes all go through it), and REDUCE/NEWOBJ/BUILD can only act on what it returned,
so no code outside the allowlist runs. Ints, floats, strings, tuples, lists, dicts and None need no
global at all.

Allowlists: :data:`NUMPY_ARRAY_GLOBALS` reads plain pickles of numpy arrays (the I3D weights of
``wfvae_jax.metrics.i3d``); ``wfvae_jax.io.torch_zip.ALLOWED_GLOBALS`` reads torch checkpoints.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from wfvae_jax.io.weight_files import INCOMPLETE_HINT, CheckpointError

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

# What ``pickle.dump`` of plain numpy arrays (and dicts/lists of them) needs.
NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], Any] = types.MappingProxyType(
    {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` (see the module docstring).

    Args:
      file: a binary file object holding the pickle.
      allowed: ``{(module, name): object}``, e.g. :data:`NUMPY_ARRAY_GLOBALS` or
        ``torch_zip.ALLOWED_GLOBALS`` (torch checkpoints).
      what: how error messages name the file.
      allows: how error messages describe what ``allowed`` admits.

    Any other global raises :class:`CheckpointError` naming it, before anything is called.
    """

    def __init__(
        self,
        file: Any,
        allowed: Mapping[tuple[str, str], Any],
        what: str = "pickle",
        allows: str = "tensors and plain data",
    ) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._what = what
        self._allows = allows

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch's default) writes Python 2 module names; the stock find_class maps
        # them when fix_imports is on, but an override receives them raw.
        if module == "__builtin__":
            module = "builtins"
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused global '{module}.{name}' in {self._what}: only {self._allows} are "
                "allowed (nothing in the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"unsupported persistent id {pid!r} in {self._what}")


def restricted_load(
    file: Any,
    allowed: Mapping[tuple[str, str], Any],
    what: str = "pickle",
    allows: str = "tensors and plain data",
) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler` (only ``allowed`` globals resolve).

    Raises:
      CheckpointError: a refused global, or a pickle that is truncated or malformed.
    """
    try:
        return RestrictedUnpickler(file, allowed, what, allows).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise CheckpointError(f"{what} is not a readable pickle ({e}); {INCOMPLETE_HINT}") from e
