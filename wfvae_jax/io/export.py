"""The EXPORT layout: ``config.json`` + ``params/`` (one ``.npy`` per array), read and written here.

Written by ``wfvae convert`` and train.py's export (:func:`save_pretrained`), read by
:func:`load_pretrained` (memory-mapped; an older export holding an orbax tree in ``params/`` is
restored into memory). The layout table is in :mod:`wfvae_jax.io.checkpoint`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

# orbax (and tensorstore, ~30 MiB of RSS) is imported by the functions that read or write its
# trees, so that `import wfvae_jax` and loading an EXPORT do without it.
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.io.layouts import (
    CONFIG_NAME,
    EXPORT_PARAMS,
    WORKDIR_EXPORT,
    Layout,
    check_part,
    detect_layout,
    is_export_dir,
    on_device,
    param_template,
)


def save_pretrained(
    path: str | os.PathLike, params: Any, config: WFVAEConfig, *, lc: Any = None
) -> None:
    """Writes an EXPORT directory: ``params`` (as float32) and ``config`` under ``path``.

    ``path`` is created; an existing ``config.json`` and ``params/`` there are replaced
    (``params/`` is written beside it and renamed into place, so arrays that a running process
    memory-mapped from the old one stay valid). ``params``: host arrays or fully addressable
    ``jax.Array``s (gather a sharded state first, ``multihost_utils.process_allgather``). In a
    multi-process run every process calls it: process 0 writes, the others wait for it. ``lc``: the
    ``wfvae_jax.lc.LCSettings`` of an LC-VAE, stored as ``config.json["lc"]`` so that
    reconstruct and eval apply the same compression (:func:`load_lc_settings`).
    """
    path = os.path.abspath(os.fspath(path))
    d = config.to_dict()
    if lc is not None:
        d["lc"] = lc.to_dict()
    if jax.process_index() == 0:
        os.makedirs(path, exist_ok=True)
        _write_array_tree(Path(path) / EXPORT_PARAMS, params)
        with open(os.path.join(path, CONFIG_NAME), "w") as f:
            json.dump(d, f, indent=2)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"wfvae_jax.save_pretrained:{path}")


ARRAY_SUFFIX = ".npy"


def _leaf_files(tree: Any) -> dict[str, Any]:
    """``{"decoder/up1_3/conv1/conv/kernel.npy": leaf}``: an EXPORT's file of each leaf."""
    return {
        "/".join(str(k.key) for k in kp) + ARRAY_SUFFIX: leaf
        for kp, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _write_array_tree(params_dir: Path, params: Any) -> None:
    """``params`` as float32 ``.npy`` files under ``params_dir``, replacing it whole."""
    import shutil

    tmp = params_dir.with_name(f"{params_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, leaf in _leaf_files(params).items():
        f = tmp / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, np.ascontiguousarray(leaf, np.float32))  # C order: what XLA maps as is
    old = params_dir.with_name(f"{params_dir.name}.old-{os.getpid()}")
    if params_dir.exists():
        params_dir.rename(old)
    tmp.rename(params_dir)
    shutil.rmtree(old, ignore_errors=True)


def _is_orbax_tree(params_dir: Path) -> bool:
    """An EXPORT written before the ``.npy`` layout (an orbax tree: ``_METADATA`` files)."""
    return (params_dir / "_METADATA").exists() or (params_dir / "_CHECKPOINT_METADATA").exists()


def is_orbax_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an EXPORT in the older orbax layout (it loads into memory, not
    memory-mapped; re-saving it, or converting again, writes the ``.npy`` layout)."""
    return is_export_dir(path) and _is_orbax_tree(Path(path) / EXPORT_PARAMS)


def _load_array_tree(params_dir: Path, template: Any) -> Any:
    """The subtree ``template`` (``ShapeDtypeStruct`` leaves) of the ``.npy`` tree in
    ``params_dir``, as ``jax.Array``s on the first local device.

    Each file is memory-mapped copy-on-write and, on CPU, aliased rather than copied: loading
    reads nothing, a weight's pages are read when a computation first touches them, and they are
    the page cache's (file-backed, like the reference's lazily mapped safetensors), not a second
    heap copy. Writes (a donated buffer) go to private pages; the file never changes. Other
    backends copy to the device. Raises ValueError naming missing arrays, arrays in the
    template's subtrees that the config's model does not have, and shape or dtype differences.
    """
    want = _leaf_files(template)
    stored = {
        p.relative_to(params_dir).as_posix()
        for part in {rel.split("/", 1)[0] for rel in want}
        for p in (params_dir / part).rglob(f"*{ARRAY_SUFFIX}")
    }
    missing = [k for k in want if k not in stored]
    extra = sorted(stored - set(want))
    arrays, wrong = {}, []
    for rel, spec in want.items():
        if rel in stored:
            try:
                a = np.load(params_dir / rel, mmap_mode="c")
            except ValueError as e:
                raise ValueError(f"{params_dir / rel} is not a .npy array: {e}") from e
            if a.shape != tuple(spec.shape) or a.dtype != spec.dtype:
                wrong.append(
                    f"{rel} stored {a.shape} {a.dtype}, expected {spec.shape} {spec.dtype}"
                )
            arrays[rel] = a
    _raise_diffs(missing, extra, wrong)
    device = jax.local_devices()[0]
    leaves = [jax.device_put(arrays[rel], device, may_alias=True) for rel in want]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def _raise_diffs(missing: list[str], extra: list[str], wrong: list[str]) -> None:
    diffs = [
        f"{len(keys)} {what} (first: {keys[0]})"
        for keys, what in (
            (missing, "arrays of the config's model not stored"),
            (extra, "stored arrays not in the config's model"),
            (wrong, "arrays of another shape or dtype"),
        )
        if keys
    ]
    if diffs:
        raise ValueError("; ".join(diffs))


def load_export_config(path: str | os.PathLike) -> WFVAEConfig:
    """The :class:`WFVAEConfig` of an EXPORT (or REFERENCE) directory's ``config.json``."""
    return WFVAEConfig.from_json(Path(path) / CONFIG_NAME)


def load_pretrained(path: str | os.PathLike, part: str | None = None) -> tuple[Any, WFVAEConfig]:
    """Loads an EXPORT directory (:func:`save_pretrained`, ``wfvae convert``).

    Args:
      path: the EXPORT directory.
      part: ``None`` (default) loads the whole model; ``"encoder"`` or ``"decoder"`` reads only
        that half (the other half's files are never opened; WF-VAE-S: encoder 146 MiB,
        decoder 413 MiB of float32). Encoder-only params serve ``wfvae_jax.encode``,
        decoder-only params ``wfvae_jax.decode``.
    Returns:
      ``(params, config)``; params are float32 ``jax.Array``s on the first local device
      (``jax.local_devices()[0]``; ``wfvae_jax.encode``/``decode(mesh=...)`` replicate them
      over a mesh) in the pytree ``{"encoder": ..., "decoder": ...}``, or only the ``part``
      key. On CPU they are memory-mapped from the export's files: nothing is read until a
      computation touches a weight, and the pages are file-backed. Deleting or replacing the
      export meanwhile is safe (:func:`save_pretrained` writes new files); rewriting a file
      in place is not. An export in the older orbax layout is restored into memory.
    Raises:
      FileNotFoundError: ``path`` is missing or not an EXPORT (the message says what it is
        instead: a PyTorch release to convert first, or a training workdir).
      ValueError: ``part`` is not one of ``None``, ``"encoder"``, ``"decoder"``; or the stored
        parameters do not match the config.
    """
    check_part(part)
    path = Path(os.path.abspath(os.fspath(path)))
    layout = detect_layout(path)
    if layout is not Layout.EXPORT:
        if layout is Layout.WORKDIR:
            hint = (
                f" It is a training workdir: load it with wfvae_jax.io.checkpoint."
                f"load_train_checkpoint, or use its export {path / WORKDIR_EXPORT}"
            )
        else:
            hint = f" If it is a PyTorch checkpoint: wfvae convert {path} OUT_DIR"
        raise FileNotFoundError(
            f"{path} is not a wfvae_jax checkpoint ({CONFIG_NAME} + {EXPORT_PARAMS}/).{hint}"
        )
    config = load_export_config(path)
    params_dir = path / EXPORT_PARAMS
    template = param_template(config)
    try:
        if not _is_orbax_tree(params_dir):
            params = _load_array_tree(
                params_dir, template if part is None else {part: template[part]}
            )
        elif part is None:
            import orbax.checkpoint as ocp

            with ocp.StandardCheckpointer() as ckptr:
                params = ckptr.restore(params_dir, on_device(template))
        else:
            params = _restore_part(params_dir, on_device({part: template[part]}))
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"parameters in {params_dir} do not match {path / CONFIG_NAME}: {e}"
        ) from e
    return params, config


def _restore_part(params_dir: Path, template: Any) -> Any:
    """The subtree ``template`` (``ShapeDtypeStruct`` leaves) of the orbax tree in ``params_dir``;
    only its arrays are read from disk.

    Orbax's partial restore checks neither shapes nor missing keys (it hands back the template's
    leaf), so the stored metadata is compared with the template first. Raises ValueError naming
    the first differences.
    """
    import orbax.checkpoint as ocp

    def flat(tree: Any) -> dict[str, Any]:
        return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}

    with ocp.PyTreeCheckpointer() as ckptr:
        stored_tree = ckptr.metadata(params_dir).item_metadata.tree
        stored = flat({k: stored_tree.get(k, {}) for k in template})
        want = flat(template)
        missing = [k for k in want if k not in stored]
        extra = [k for k in stored if k not in want]
        wrong = [
            f"{k} stored {tuple(stored[k].shape)} {stored[k].dtype}, expected {v.shape} {v.dtype}"
            for k, v in want.items()
            if k in stored
            and (tuple(stored[k].shape) != tuple(v.shape) or np.dtype(stored[k].dtype) != v.dtype)
        ]
        _raise_diffs(missing, extra, wrong)
        return ckptr.restore(
            params_dir,
            args=ocp.args.PyTreeRestore(
                item=template,
                restore_args=ocp.checkpoint_utils.construct_restore_args(template),
                partial_restore=True,
            ),
        )


def load_lc_settings(path: str | os.PathLike) -> Any:
    """The LC-VAE settings of an EXPORT directory (``config.json["lc"]``), or ``None`` for a
    plain WF-VAE. Raises FileNotFoundError without config.json, ValueError for bad settings."""
    cfg_file = Path(os.path.abspath(os.fspath(path))) / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found; not a wfvae_jax checkpoint.")
    d = json.loads(cfg_file.read_text()).get("lc")
    if d is None:
        return None
    from wfvae_jax.lc import LCSettings

    return LCSettings.from_dict(d)
