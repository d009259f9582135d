"""Read ``torch.save`` zip checkpoints into numpy without torch and without running pickled code.

A torch zip checkpoint (``torch.save``'s default since torch 1.6; ``*.ckpt``, ``*.pt``, ``*.pth``,
``*.bin``) is a zip archive holding ``<root>/data.pkl`` (a pickle of the object tree) and
``<root>/data/<key>`` (raw little/big-endian tensor bytes; ``<root>/byteorder`` says which).
Legacy (pre-1.6, non-zip) torch files are refused with a ``ValueError``; so are truncated or
corrupt files, with a message naming the file and suggesting an incomplete download. Tensors keep
their dtype except bfloat16, widened to float32 (:func:`wfvae_jax.io.weight_files.widen`).

Security model
--------------
``data.pkl`` is read by ``restricted_pickle.RestrictedUnpickler`` (no code runs; see
:mod:`wfvae_jax.io.restricted_pickle`) with the torch allowlist (:data:`ALLOWED_GLOBALS`):

* ``collections.OrderedDict`` -- ``state_dict()`` returns one (with a ``_metadata`` attribute
  restored through BUILD, which is plain data);
* ``builtins.set``, ``builtins.frozenset``, ``builtins.complex``, ``builtins.bytearray`` (spelled
  ``__builtin__.*`` by protocol 2, torch's default) and ``_codecs.encode`` (latin-1 only) -- how
  protocol 2 pickles sets, complex numbers and bytes; ints, floats, strings, tuples, lists, dicts
  and None need no global at all;
* ``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, ``_rebuild_parameter_with_state``
  -- replaced by this module's own functions that rebuild a numpy array from the raw storage
  bytes, after checking that the (offset, shape, stride) view lies inside the storage;
* the torch storage classes (``torch.FloatStorage``, ``HalfStorage``, ``BFloat16Storage``,
  ``DoubleStorage``, ``LongStorage``, ``IntStorage``, ``ShortStorage``, ``CharStorage``,
  ``ByteStorage``, ``BoolStorage``, ``UntypedStorage``) -- replaced by immutable markers that only
  carry a numpy dtype; they appear in the persistent ids ``('storage', storage_type, key,
  location, numel)`` that point at ``data/<key>``;
* ``torch.Size`` (becomes ``tuple``) and the ``torch.<dtype>`` objects (become immutable
  :class:`TorchDtype` markers).

Every substitute is an immutable builtin type or an immutable NamedTuple instance, so a crafted
BUILD opcode cannot mutate state shared between loads. Nothing from torch is imported.

Bounded memory (zip bombs)
--------------------------
``torch.save`` stores every record uncompressed (``ZIP_STORED``), so the bytes an archive declares
(the uncompressed sizes in its central directory) are at most its file size. Before anything is
read, an archive whose declared sizes add up to more than :data:`MAX_EXPANSION` (16) times the file
size (plus 1 MiB) is refused, as is a stored entry whose compressed and uncompressed sizes differ.
Each storage record is checked against the tensor metadata before it is read (it must hold the
``numel x itemsize`` bytes its persistent id declares) and then read in 16 MiB pieces straight into
the array that becomes the tensor, reading no more than the metadata declares. A tensor that is its
whole storage (the usual case) is that array, not a copy. So loading needs about the file size
(plus one piece), and a 2 MB archive that inflates to gigabytes is refused without inflating it.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import re
import sys
import types
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wfvae_jax.io.restricted_pickle import RestrictedUnpickler
from wfvae_jax.io.weight_files import BFLOAT16, INCOMPLETE_HINT, CheckpointError, widen

# Declared (uncompressed) bytes allowed per byte of archive; torch.save writes stored records, so
# a real checkpoint declares at most its own size.
MAX_EXPANSION = 16
_EXPANSION_SLACK = 1 << 20
_READ_PIECE = 16 << 20


# The stand-ins are NamedTuples: no __dict__, no settable attributes and no __setstate__, so a
# BUILD opcode aimed at one fails. (A frozen dataclass is not enough: with slots=True it gains a
# __setstate__ that writes fields through object.__setattr__.)
class _StorageType(NamedTuple):
    """Stand-in for a torch storage class such as ``torch.FloatStorage``."""

    name: str
    dtype_str: str  # a native-order numpy dtype string, or "bfloat16"

    @property
    def dtype(self) -> np.dtype:
        return BFLOAT16 if self.dtype_str == "bfloat16" else np.dtype(self.dtype_str)


class TorchDtype(NamedTuple):
    """Stand-in for a ``torch.<dtype>`` object found in a pickle (e.g. ``torch.float16``).

    ``name`` is torch's name (``"float16"``); :attr:`numpy` gives the numpy dtype, with bfloat16
    reported as ``ml_dtypes.bfloat16``.
    """

    name: str
    dtype_str: str

    @property
    def numpy(self) -> np.dtype:
        return BFLOAT16 if self.dtype_str == "bfloat16" else np.dtype(self.dtype_str)


_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    # torch.save of an untyped storage records its size in bytes.
    "UntypedStorage": "u1",
}

_TORCH_DTYPES = {
    "float32": "f4",
    "float": "f4",
    "float64": "f8",
    "double": "f8",
    "float16": "f2",
    "half": "f2",
    "bfloat16": "bfloat16",
    "int64": "i8",
    "long": "i8",
    "int32": "i4",
    "int": "i4",
    "int16": "i2",
    "short": "i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
}


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        type(v) is int and v >= 0 for v in value
    ):  # bool is an int subclass; exclude it with `type(v) is int`
        raise CheckpointError(f"tensor {what} must be a tuple of ints >= 0, got {value!r}")
    return value


def _rebuild_tensor_v2_raw(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Substitute for ``torch._utils._rebuild_tensor_v2``: a C-contiguous numpy array of the view.

    Keeps bfloat16 as ``ml_dtypes.bfloat16`` (:func:`_rebuild_tensor_v2` widens it).

    ``storage`` is the flat array from ``persistent_load``; ``size``/``stride`` are in elements.
    A tensor that is its whole storage in C order is returned as a reshape of the storage (no
    copy; tensors sharing that storage in the file then share memory, as in torch); any other
    view is copied. Raises :class:`CheckpointError` if the view would read outside the storage.
    """
    del requires_grad, backward_hooks, metadata  # autograd state has no numpy meaning
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise CheckpointError("tensor storage must come from a persistent id")
    if type(storage_offset) is not int or storage_offset < 0:
        raise CheckpointError(f"bad tensor storage offset {storage_offset!r}")
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in rank")
    if 0 in size:
        return np.empty(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    # as_strided does no bounds checking; an unchecked view would read foreign memory.
    if last >= storage.shape[0]:
        raise CheckpointError(
            f"tensor view (offset {storage_offset}, size {size}, stride {stride}) exceeds its "
            f"storage of {storage.shape[0]} elements"
        )
    if storage_offset == 0 and math.prod(size) == storage.shape[0] and _c_order(size, stride):
        return storage.reshape(size)
    base = storage[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    # np.array, not np.ascontiguousarray: the latter turns 0-d (scalar) tensors into shape (1,).
    return np.array(view, copy=True, order="C")


def _rebuild_tensor_v2(*args: Any) -> np.ndarray:
    """:func:`_rebuild_tensor_v2_raw` with bfloat16 widened (exactly) to float32."""
    return widen(_rebuild_tensor_v2_raw(*args))


def _c_order(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether ``stride`` walks ``size`` in C order (strides of size-1 dims do not matter)."""
    expected = 1
    for n, st in zip(reversed(size), reversed(stride), strict=True):
        if n != 1 and st != expected:
            return False
        expected *= n
    return True


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    """Substitute for ``torch._utils._rebuild_parameter``: a Parameter is just its data."""
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> Any:
    """Substitute for ``torch._utils._rebuild_parameter_with_state`` (Python attrs dropped)."""
    return data


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Substitute for ``_codecs.encode``, which protocol 2 uses to pickle ``bytes``."""
    if not isinstance(text, str) or encoding != "latin1":
        raise CheckpointError("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin1")


class _Callable(NamedTuple):
    """Frozen wrapper so a crafted BUILD opcode cannot change e.g. a function's ``__defaults__``."""

    fn: Any

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _Callable(_codecs_encode),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Callable(_rebuild_parameter_with_state),
        ("torch", "Size"): tuple,
    }
    for name, dtype_str in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype_str)
    allowed[("torch.storage", "UntypedStorage")] = allowed[("torch", "UntypedStorage")]
    for name, dtype_str in _TORCH_DTYPES.items():
        allowed[("torch", name)] = TorchDtype(name, dtype_str)
    return allowed


ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = types.MappingProxyType(_allowed_globals())
_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")


class _TorchUnpickler(RestrictedUnpickler):
    """Reads torch's ``data.pkl``; storages come from the archive's ``data/<key>`` records."""

    def __init__(
        self,
        file: Any,
        archive: zipfile.ZipFile,
        root: str,
        byteorder: str,
        what: str,
        widen_bfloat16: bool = True,
    ) -> None:
        allowed = ALLOWED_GLOBALS
        if not widen_bfloat16:
            allowed = types.MappingProxyType(
                {**allowed, _REBUILD_TENSOR: _Callable(_rebuild_tensor_v2_raw)}
            )
        super().__init__(file, allowed, what)
        self._archive = archive
        self._root = root
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"persistent id names no storage type: {storage_type!r}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointError(f"bad storage key/numel in persistent id {pid!r}")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != storage_type.dtype:
                raise CheckpointError(f"storage {key} is used with two dtypes")
            return cached
        flat = self._read_storage(f"{self._root}/data/{key}", storage_type.dtype, numel)
        self._storages[key] = flat
        return flat

    def _read_storage(self, record: str, dtype: np.dtype, numel: int) -> np.ndarray:
        """Checks ``record``'s declared size against ``numel`` x itemsize, then reads that many
        bytes in pieces into a fresh array (never more than the metadata declares)."""
        try:
            info = self._archive.getinfo(record)
        except KeyError:
            raise CheckpointError(f"storage record {record!r} missing from archive") from None
        nbytes = numel * dtype.itemsize
        if info.file_size < nbytes:
            raise CheckpointError(
                f"storage record {record!r} holds {info.file_size} bytes, needs {numel} x "
                f"{dtype.itemsize}; {INCOMPLETE_HINT}"
            )
        buf = np.empty(nbytes, np.uint8)
        view = memoryview(buf)
        with self._archive.open(info) as f:
            done = 0
            while done < nbytes:
                got = f.readinto(view[done : done + _READ_PIECE])
                if not got:
                    raise CheckpointError(
                        f"storage record {record!r} ended after {done} of {nbytes} bytes; "
                        f"{INCOMPLETE_HINT}"
                    )
                done += got
        flat = buf.view(dtype)
        if self._byteorder != sys.byteorder:
            flat.byteswap(inplace=True)
        return flat


def _check_declared_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuses archives that declare far more bytes than they hold (see the module docstring)."""
    file_size = path.stat().st_size
    declared = 0
    for info in archive.infolist():
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(
                f"{path}: stored zip entry {info.filename!r} declares {info.file_size} bytes but "
                f"holds {info.compress_size}; {INCOMPLETE_HINT}"
            )
        declared += info.file_size
    limit = MAX_EXPANSION * file_size + _EXPANSION_SLACK
    if declared > limit:
        raise CheckpointError(
            f"{path}: refused, its zip entries declare {declared:,} bytes uncompressed but the "
            f"file is {file_size:,} bytes (over {MAX_EXPANSION}x); torch.save writes "
            "uncompressed records, so this is a zip bomb or not a torch checkpoint"
        )


_DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")


def load_torch_pickle(path: str | os.PathLike, widen_bfloat16: bool = True) -> Any:
    """Load a torch zip-format checkpoint as a plain Python tree with numpy arrays for tensors.

    Args:
        path: a file written by ``torch.save`` (zip format, torch >= 1.6), any extension.
        widen_bfloat16: widen bfloat16 tensors to float32 (default); ``False`` keeps them as
            ``ml_dtypes.bfloat16`` arrays.

    Returns:
        The saved object with every tensor replaced by a C-contiguous ``np.ndarray`` of the same
        shape and dtype (bfloat16 widened to float32); dicts, lists, tuples, ints, floats and
        strings are kept as-is (``OrderedDict`` stays ``OrderedDict``), ``torch.Size`` becomes
        ``tuple`` and ``torch.<dtype>`` becomes :class:`TorchDtype`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a zip-format torch file (e.g. the legacy pre-1.6 format).
        CheckpointError (a ValueError and a pickle.UnpicklingError): ``data.pkl`` references a
            global outside the allowlist (see the module docstring), its tensors are malformed,
            the archive declares far more bytes than it holds (a zip bomb), or the file is
            truncated or corrupt.

    Source: the zip layout and persistent ids are those of ``torch.serialization._save``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"torch checkpoint {path} does not exist")
    if not path.is_file():
        raise IsADirectoryError(f"torch checkpoint {path} is not a file")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(4)
        if head[:1] == b"\x80":
            hint = "it looks like the legacy (pre-1.6) pickle format; re-save it with recent torch"
        elif head == b"PK\x03\x04":
            hint = f"the zip archive has no end (central directory); {INCOMPLETE_HINT}"
        else:
            hint = f"it is not a zip archive; {INCOMPLETE_HINT}"
        raise ValueError(f"{path} is not a zip-format torch checkpoint: {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_declared_sizes(archive, path)
            roots = [m.group(1) for n in archive.namelist() if (m := _DATA_PKL.match(n))]
            if len(roots) != 1:
                raise ValueError(
                    f"{path}: expected exactly one '<root>/data.pkl' in the zip archive, found "
                    f"{len(roots)}; not a torch.save checkpoint"
                )
            root = roots[0]
            try:
                byteorder = archive.read(f"{root}/byteorder").decode("ascii").strip()
            except KeyError:
                byteorder = "little"  # files from torch < 2.1 have no marker; torch assumes little
            except UnicodeDecodeError:
                byteorder = "?"
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder record {byteorder!r}")
            with archive.open(f"{root}/data.pkl") as pkl:
                unpickler = _TorchUnpickler(
                    pkl, archive, root, byteorder, f"{path}", widen_bfloat16
                )
                try:
                    return unpickler.load()
                except CheckpointError:
                    raise
                except (pickle.UnpicklingError, EOFError, TypeError, IndexError, KeyError) as e:
                    raise CheckpointError(
                        f"{path}: data.pkl is not a readable pickle ({e}); {INCOMPLETE_HINT}"
                    ) from e
    except (zipfile.BadZipFile, zlib.error, EOFError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt zip archive ({e}); {INCOMPLETE_HINT}") from e
