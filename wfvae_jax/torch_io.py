"""Read PyTorch checkpoints into numpy without torch and without running pickled code.

Supported inputs (see :func:`load_state_dict`):

* ``*.safetensors`` files, read with ``safetensors.numpy``;
* a release directory (``config.json`` + ``diffusion_pytorch_model.safetensors``, the layout of the
  published WF-VAE weights); only the safetensors file is read here;
* torch zip-format files (``torch.save``'s default since torch 1.6) named ``*.ckpt``, ``*.pt``,
  ``*.pth`` or ``*.bin``, e.g. the reference's training checkpoints (``train_ddp.py``'s
  ``save_checkpoint``) and torchvision-style state dicts.

Legacy (pre-1.6, non-zip) torch files are refused with a ``ValueError``.

Security model
--------------
A torch zip checkpoint is a zip archive holding ``<root>/data.pkl`` (a pickle of the object tree)
and ``<root>/data/<key>`` (raw little/big-endian tensor bytes; ``<root>/byteorder`` says which).
Unpickling normally imports and calls any global the pickle names, so a hostile file can run
arbitrary code (``os.system``, ``builtins.eval``, ...). Here ``data.pkl`` is read by
``_RestrictedUnpickler``, whose ``find_class`` resolves only an explicit allowlist and raises
``pickle.UnpicklingError`` naming any other global. ``find_class`` is the only route by which a
pickle can reach a callable (GLOBAL, STACK_GLOBAL, INST and the EXT opcodes all go through it), and
REDUCE/NEWOBJ/BUILD can only act on what it returned, so no code outside this allowlist runs:

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

Dtypes: numpy has no native bfloat16, so bfloat16 tensors are widened to float32 (exact: every
bfloat16 value is a float32 value) via ``ml_dtypes``; float16 stays float16, other dtypes map 1:1.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

RELEASE_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
RELEASE_CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _widen(array: np.ndarray) -> np.ndarray:
    """Return ``array`` with bfloat16 widened (exactly) to float32; other dtypes untouched."""
    if array.dtype == _BFLOAT16:
        return array.astype(np.float32)
    return array


# The stand-ins are NamedTuples: no __dict__, no settable attributes and no __setstate__, so a
# BUILD opcode aimed at one fails. (A frozen dataclass is not enough: with slots=True it gains a
# __setstate__ that writes fields through object.__setattr__.)
class _StorageType(NamedTuple):
    """Stand-in for a torch storage class such as ``torch.FloatStorage``."""

    name: str
    dtype_str: str  # a native-order numpy dtype string, or "bfloat16"

    @property
    def dtype(self) -> np.dtype:
        return _BFLOAT16 if self.dtype_str == "bfloat16" else np.dtype(self.dtype_str)


class TorchDtype(NamedTuple):
    """Stand-in for a ``torch.<dtype>`` object found in a pickle (e.g. ``torch.float16``).

    ``name`` is torch's name (``"float16"``); :attr:`numpy` gives the numpy dtype, with bfloat16
    reported as ``ml_dtypes.bfloat16``.
    """

    name: str
    dtype_str: str

    @property
    def numpy(self) -> np.dtype:
        return _BFLOAT16 if self.dtype_str == "bfloat16" else np.dtype(self.dtype_str)


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
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of ints >= 0, got {value!r}")
    return value


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Substitute for ``torch._utils._rebuild_tensor_v2``: a contiguous numpy copy of the view.

    ``storage`` is the flat array from ``persistent_load``; ``size``/``stride`` are in elements.
    Raises ``pickle.UnpicklingError`` if the view would read outside the storage.
    """
    del requires_grad, backward_hooks, metadata  # autograd state has no numpy meaning
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor storage must come from a persistent id")
    if type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError(f"bad tensor storage offset {storage_offset!r}")
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in rank")
    if 0 in size:
        return _widen(np.empty(size, dtype=storage.dtype))
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    # as_strided does no bounds checking; an unchecked view would read foreign memory.
    if last >= storage.shape[0]:
        raise pickle.UnpicklingError(
            f"tensor view (offset {storage_offset}, size {size}, stride {stride}) exceeds its "
            f"storage of {storage.shape[0]} elements"
        )
    base = storage[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    # np.array, not np.ascontiguousarray: the latter turns 0-d (scalar) tensors into shape (1,).
    return _widen(np.array(view, copy=True, order="C"))


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
        raise pickle.UnpicklingError("_codecs.encode is allowed only as encode(str, 'latin1')")
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


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch's ``data.pkl`` that resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str, byteorder: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch's default) writes Python 2 module names; the stock find_class maps
        # them when fix_imports is on, but an override receives them raw.
        if module == "__builtin__":
            module = "builtins"
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': not in the torch_io allowlist "
                "(the checkpoint holds objects other than tensors and plain data)"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {storage_type!r}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"bad storage key/numel in persistent id {pid!r}")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != storage_type.dtype:
                raise pickle.UnpicklingError(f"storage {key} is used with two dtypes")
            return cached
        record = f"{self._root}/data/{key}"
        try:
            raw = self._archive.read(record)
        except KeyError:
            raise pickle.UnpicklingError(
                f"storage record {record!r} missing from archive"
            ) from None
        dtype = storage_type.dtype
        if len(raw) < numel * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"storage record {record!r} holds {len(raw)} bytes, needs {numel} x "
                f"{dtype.itemsize}"
            )
        flat = np.frombuffer(raw, dtype=dtype, count=numel)
        if self._byteorder != sys.byteorder:
            flat = flat.byteswap()
        self._storages[key] = flat
        return flat


_DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")


def load_torch_pickle(path: str | os.PathLike) -> Any:
    """Load a torch zip-format checkpoint as a plain Python tree with numpy arrays for tensors.

    Args:
        path: a file written by ``torch.save`` (zip format, torch >= 1.6), any extension.

    Returns:
        The saved object with every tensor replaced by a C-contiguous ``np.ndarray`` of the same
        shape and dtype (bfloat16 widened to float32); dicts, lists, tuples, ints, floats and
        strings are kept as-is (``OrderedDict`` stays ``OrderedDict``), ``torch.Size`` becomes
        ``tuple`` and ``torch.<dtype>`` becomes :class:`TorchDtype`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a zip-format torch file (e.g. the legacy pre-1.6 format).
        pickle.UnpicklingError: ``data.pkl`` references a global outside the allowlist (see the
            module docstring), or its tensors are malformed.

    Source: the zip layout and persistent ids are those of ``torch.serialization._save``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torch checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(2)
        hint = (
            "it looks like the legacy (pre-1.6) pickle format; re-save it with a recent torch"
            if head[:1] == b"\x80"
            else "it is not a zip archive"
        )
        raise ValueError(f"{path} is not a zip-format torch checkpoint: {hint}")
    with zipfile.ZipFile(path) as archive:
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
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: unknown byteorder record {byteorder!r}")
        with archive.open(f"{root}/data.pkl") as pkl:
            return _RestrictedUnpickler(pkl, archive, root, byteorder).load()


def _is_flat_array_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    )


def select_generator_state_dict(obj: Any, use_ema: bool = True) -> dict[str, np.ndarray]:
    """Pick the generator (VAE) weights out of a loaded checkpoint tree.

    Mirrors ``WFVAEModel.init_from_ckpt`` (causalvideovae/model/vae/modeling_wfvae.py):

    1. if ``use_ema`` and ``obj["ema_state_dict"]`` exists and is non-empty, use it with every
       ``"module."`` removed from the keys (the reference uses ``str.replace``; the EMA shadow
       was taken from the DDP-wrapped model). The EMA shadow holds only trainable parameters, so
       frozen ones (e.g. the wavelet filters) are absent, as with the reference's
       ``strict=False`` load;
    2. elif ``"state_dict"`` in ``obj``: ``obj["state_dict"]["gen_model"]`` if present, else
       ``obj["state_dict"]``;
    3. else ``obj`` itself (a plain state dict, e.g. a torchvision ``.pth``).

    ``use_ema=False`` corresponds to the reference run with the environment variable
    ``NOT_USE_EMA_MODEL`` set (to any value: the reference compares the string with ``0``, so
    even ``NOT_USE_EMA_MODEL=0`` disables EMA). The environment is not read here.

    Args:
        obj: the tree from :func:`load_torch_pickle`.
        use_ema: prefer the EMA weights when present.

    Returns:
        A new ``dict`` from parameter name to ``np.ndarray``.

    Raises:
        ValueError: ``obj`` is not a mapping or the selected entry is not a flat str -> array
            mapping.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint root must be a mapping, got {type(obj).__name__}")
    ema = obj.get("ema_state_dict")
    if use_ema and isinstance(ema, Mapping) and len(ema) > 0:
        source, selected = "ema_state_dict", {k.replace("module.", ""): v for k, v in ema.items()}
    elif "state_dict" in obj:
        selected = obj["state_dict"]
        source = "state_dict"
        if isinstance(selected, Mapping) and "gen_model" in selected:
            selected, source = selected["gen_model"], "state_dict.gen_model"
    else:
        source, selected = "checkpoint root", obj
    if not _is_flat_array_dict(selected):
        bad = (
            [k for k, v in selected.items() if not isinstance(v, np.ndarray)][:5]
            if isinstance(selected, Mapping)
            else type(selected).__name__
        )
        raise ValueError(
            f"{source} is not a flat mapping of parameter name -> tensor (offending: {bad})"
        )
    return dict(selected)


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: _widen(v) for k, v in load_file(path).items()}


def load_state_dict(path: str | os.PathLike, use_ema: bool = True) -> dict[str, np.ndarray]:
    """Load model weights as ``{parameter name: np.ndarray}`` from a torch or safetensors file.

    Args:
        path: one of
            * a ``.safetensors`` file;
            * a directory holding ``diffusion_pytorch_model.safetensors`` (the release layout,
              which also has ``config.json``; the config is not read here);
            * a torch zip-format ``.ckpt``/``.pt``/``.pth``/``.bin`` file: a reference training
              checkpoint or a plain state dict, reduced by :func:`select_generator_state_dict`.
        use_ema: for training checkpoints, prefer ``ema_state_dict`` (see
            :func:`select_generator_state_dict`; ``False`` = the reference's
            ``NOT_USE_EMA_MODEL``).

    Returns:
        Arrays in torch layout (e.g. conv kernels ``(out, in, kt, kh, kw)``), C-contiguous, with
        the stored dtype except bfloat16, which is widened exactly to float32.

    Raises:
        FileNotFoundError: ``path`` or the directory's safetensors file is missing.
        ValueError: unknown extension, legacy torch format, or no usable state dict inside.
        pickle.UnpicklingError: the torch pickle references a disallowed global.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        weights = path / RELEASE_WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(
                f"{path} is a directory but has no {RELEASE_WEIGHTS_NAME} (expected the release "
                f"layout: {RELEASE_CONFIG_NAME} + {RELEASE_WEIGHTS_NAME})"
            )
        return _load_safetensors(weights)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return select_generator_state_dict(load_torch_pickle(path), use_ema=use_ema)
    raise ValueError(
        f"{path}: unknown checkpoint extension {suffix!r}; expected {SAFETENSORS_SUFFIX}, one of "
        f"{', '.join(TORCH_SUFFIXES)}, or a release directory with {RELEASE_WEIGHTS_NAME}"
    )
