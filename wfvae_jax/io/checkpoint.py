"""Every on-disk checkpoint layout wfvae_jax reads or writes: the one owner of their names.

Layouts (:class:`Layout`, told apart by :func:`detect_layout`)::

    EXPORT     ours: written by ``wfvae convert`` and train.py's export
      DIR/config.json        the WFVAEConfig (the reference's field names); an exported
                             LC-VAE also has an "lc" entry, its wfvae_jax.lc.LCSettings
      DIR/params/            the float32 parameters, one NumPy ``.npy`` file per array at
                             its tree path (``params/decoder/up1_3/conv1/conv/kernel.npy``);
                             read memory-mapped (:func:`load_pretrained`). Exports written
                             before 2026-12 hold an orbax StandardCheckpointer tree here
                             instead (``params/_METADATA``); they still load.

    WORKDIR    a training run: train.py, through ``wfvae_jax.train.checkpointing``
      WORKDIR/checkpoints/<step>/state/   the TrainState (params, ema_params, optimizer, disc)
      WORKDIR/checkpoints/<step>/data/    every process's grain iterator state
      WORKDIR/checkpoints/<step>/meta/    JSON {"step", "config": run config, "model": WFVAEConfig,
                                          "data": the data manifest (train/checkpointing.py)}
      WORKDIR/export/                     an EXPORT of the final EMA weights (``config.export``)

    REFERENCE  PyTorch weights, read by the converter (:func:`locate_reference`)
      DIR/config.json + DIR/diffusion_pytorch_model.safetensors        diffusers save_pretrained
      DIR/config.json + DIR/diffusion_pytorch_model.safetensors.index.json + its shards
      DIR/config.json + DIR/<one>.ckpt|.pt|.pth|.bin     the reference's from_pretrained
                                                         (*.ckpt), diffusers' .bin
      FILE.safetensors | FILE.safetensors.index.json | FILE.ckpt|.pt|.pth|.bin  (config.json
      next to it, if any); .ckpt from the reference's train_ddp.py, Open-Sora Plan, MindSpeed-MM

File formats (torch zip, safetensors, sharded safetensors) are read by :mod:`.torch_files`;
the key names inside a reference state dict are the converter's (:mod:`wfvae_jax.io.convert`).
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

# orbax (and tensorstore, ~30 MiB of RSS) is imported by the functions that read or write its
# trees, so that `import wfvae_jax` and loading an EXPORT do without it.
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.io.torch_files import (
    SAFETENSORS_INDEX_SUFFIX,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    reference_weights,
)

CONFIG_NAME = "config.json"  # the config file of EXPORT and REFERENCE directories
EXPORT_PARAMS = "params"
WORKDIR_CHECKPOINTS = "checkpoints"
WORKDIR_EXPORT = "export"
STATE_ITEM, DATA_ITEM, META_ITEM = "state", "data", "meta"
WORKDIR_ITEMS = (STATE_ITEM, DATA_ITEM, META_ITEM)


class Layout(enum.Enum):
    """Which of the layouts in the module docstring a path is."""

    EXPORT = "wfvae_jax checkpoint (config.json + params/)"
    WORKDIR = "wfvae_jax training workdir (checkpoints/)"
    REFERENCE = "PyTorch reference checkpoint"


def is_export_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an EXPORT directory (``config.json`` and ``params/``)."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / EXPORT_PARAMS).is_dir()


def is_workdir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training WORKDIR (has ``checkpoints/``)."""
    return (Path(path) / WORKDIR_CHECKPOINTS).is_dir()


def detect_layout(path: str | os.PathLike) -> Layout:
    """The :class:`Layout` of ``path``; any other existing file or directory is REFERENCE.

    Raises:
      FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_dir() and is_export_dir(p):
        return Layout.EXPORT
    if p.is_dir() and is_workdir(p):
        return Layout.WORKDIR
    return Layout.REFERENCE


def param_template(config: WFVAEConfig) -> Any:
    """The parameter pytree of ``config`` as ``jax.ShapeDtypeStruct`` leaves (float32, nothing
    computed): the target that checkpoints are restored into and checked against."""
    from wfvae_jax.core.model import init_params

    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def _on_device(template: Any) -> Any:
    """``template`` with every leaf placed on the first local device, so orbax restores
    ``jax.Array``s there: the weights exist once, where they run. Host numpy params are copied
    to the device at every jitted call instead (XLA:CPU included: +413 MiB of RSS per WF-VAE-S
    decode call, +146 MiB per encode)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), template
    )


# ---- EXPORT -------------------------------------------------------------------------------


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


PARTS = ("encoder", "decoder")  # the top-level subtrees of the parameters
# The half each op runs: load_pretrained(path, part=OP_PART[op]) holds no unused weights.
OP_PART = {"encode": "encoder", "decode": "decoder"}


def _check_part(part: str | None) -> None:
    if part is not None and part not in PARTS:
        raise ValueError(f"part must be None (both), 'encoder' or 'decoder', got {part!r}")


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
    _check_part(part)
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
                params = ckptr.restore(params_dir, _on_device(template))
        else:
            params = _restore_part(params_dir, _on_device({part: template[part]}))
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


# ---- WORKDIR ------------------------------------------------------------------------------


def checkpoints_dir(workdir: str | os.PathLike) -> str:
    """``WORKDIR/checkpoints``, the directory of the run's orbax ``CheckpointManager``."""
    return os.path.join(os.path.abspath(os.fspath(workdir)), WORKDIR_CHECKPOINTS)


def _step_config(step_dir: str) -> WFVAEConfig:
    """The model config saved with a checkpoint, from its ``meta`` item's ``"model"``."""
    import orbax.checkpoint as ocp

    meta_dir = os.path.join(step_dir, META_ITEM)
    if not os.path.isdir(meta_dir):
        raise FileNotFoundError(
            f"checkpoint {step_dir} has no {META_ITEM}/ item (train.py writes the model config "
            "there); not a wfvae_jax training checkpoint"
        )
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        meta = ckptr.restore(meta_dir)
    if not (isinstance(meta, dict) and isinstance(meta.get("model"), dict)):
        raise ValueError(f"{meta_dir} holds no model config (no 'model' entry)")
    return WFVAEConfig.from_dict(meta["model"])


def _restore_workdir_params(
    workdir: str | os.PathLike, use_ema: bool, step: int | None, part: str | None = None
) -> tuple[Any, WFVAEConfig, int]:
    import orbax.checkpoint as ocp

    ckpt_dir = checkpoints_dir(workdir)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{ckpt_dir} does not exist; not a wfvae_jax training workdir")
    with ocp.CheckpointManager(ckpt_dir) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint saved in {ckpt_dir}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; steps: {steps}")
    step_dir = os.path.join(ckpt_dir, str(step))
    config = _step_config(step_dir)
    item_dir = os.path.join(step_dir, STATE_ITEM)
    key = "ema_params" if use_ema else "params"
    # Partial restore: only the wanted parameter subtree is read, never the optimizer states.
    template = _on_device(param_template(config))
    template = {key: template if part is None else {part: template[part]}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(template)
    with ocp.PyTreeCheckpointer() as ckptr:
        try:
            restored = ckptr.restore(
                item_dir,
                args=ocp.args.PyTreeRestore(
                    item=template, restore_args=restore_args, partial_restore=True
                ),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise ValueError(
                f"checkpoint {item_dir} has no '{key}' matching its model config: {e}"
            ) from e
    return restored[key], config, int(step)


def load_train_checkpoint(
    workdir: str | os.PathLike, use_ema: bool = True, step: int | None = None
) -> tuple[Any, WFVAEConfig]:
    """WF-VAE parameters from a training WORKDIR (layout in the module docstring).

    Args:
      workdir: the directory ``train.py`` wrote.
      use_ema: return the EMA shadow ``ema_params`` (default, what the paper evaluates) instead
        of the raw ``params``.
      step: checkpoint step; ``None`` takes the latest.
    Returns:
      ``(params, config)``: float32 ``jax.Array`` pytree on the first local device and its
      :class:`WFVAEConfig`.
    Raises:
      FileNotFoundError: no checkpoint (or not the requested step), or no ``meta`` item.
      ValueError: the checkpoint does not hold the requested parameters for its config.
    """
    params, config, _ = _restore_workdir_params(workdir, use_ema, step)
    return params, config


def load_model(
    checkpoint: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    use_ema: bool = True,
    step: int | None = None,
    part: str | None = None,
) -> tuple[Any, WFVAEConfig, str]:
    """``(params, config, description)`` from exactly one of ``checkpoint`` / ``workdir``.

    ``checkpoint`` is an EXPORT directory (a WORKDIR given here is loaded as one too);
    ``workdir`` a training WORKDIR (:func:`load_train_checkpoint`; ``use_ema``/``step`` apply).
    ``part``: ``None`` (both halves), ``"encoder"`` or ``"decoder"``: only that half is read
    (as :func:`load_pretrained`). ``description`` names the source for reports. Raises
    ValueError unless exactly one source is given, or for a bad ``part``; see the loaders for
    the rest.
    """
    if (checkpoint is None) == (workdir is None):
        raise ValueError("give exactly one of --checkpoint (converted dir) or --workdir")
    _check_part(part)
    if checkpoint is not None and detect_layout(checkpoint) is not Layout.WORKDIR:
        params, config = load_pretrained(checkpoint, part=part)
        return params, config, f"checkpoint {os.path.abspath(os.fspath(checkpoint))}"
    src = workdir if workdir is not None else checkpoint
    params, config, step = _restore_workdir_params(src, use_ema, step, part)
    which = "EMA" if use_ema else "raw"
    return params, config, f"workdir {os.path.abspath(os.fspath(src))} (step {step}, {which})"


def load_model_lc_settings(
    checkpoint: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    step: int | None = None,
) -> Any:
    """The LC-VAE settings (``wfvae_jax.lc.LCSettings``) of what :func:`load_model` loads with
    the same arguments, or ``None`` for a plain WF-VAE: an EXPORT's ``config.json["lc"]``
    (:func:`load_lc_settings`), a WORKDIR step's run config (``meta["config"]``, its
    ``model.lc`` when ``enabled``)."""
    import orbax.checkpoint as ocp

    if checkpoint is not None and detect_layout(checkpoint) is not Layout.WORKDIR:
        return load_lc_settings(checkpoint)
    ckpt_dir = checkpoints_dir(workdir if workdir is not None else checkpoint)
    with ocp.CheckpointManager(ckpt_dir) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        return None
    meta_dir = os.path.join(ckpt_dir, str(steps[-1] if step is None else step), META_ITEM)
    if not os.path.isdir(meta_dir):
        return None
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        meta = ckptr.restore(meta_dir)
    run_config = meta.get("config") if isinstance(meta, dict) else None
    if isinstance(run_config, str):
        try:
            run_config = json.loads(run_config)
        except ValueError:
            return None
    model = run_config.get("model") if isinstance(run_config, dict) else None
    lc = model.get("lc") if isinstance(model, dict) else None
    if not isinstance(lc, dict) or not lc.get("enabled"):
        return None
    from wfvae_jax.lc import LCSettings

    return LCSettings.from_dict(lc)


# ---- REFERENCE ----------------------------------------------------------------------------


class ReferenceFiles(NamedTuple):
    """Where a REFERENCE checkpoint's weights and config are.

    ``weights`` is a ``.safetensors``, a ``.safetensors.index.json`` or a torch file;
    ``config`` the ``config.json`` beside it, or None.
    """

    weights: Path
    config: Path | None


def locate_reference(src: str | os.PathLike) -> ReferenceFiles:
    """The weights file and config of a REFERENCE ``src`` (a directory or a weights file).

    Raises:
      FileNotFoundError: ``src`` does not exist, or a directory holds no weights.
      ValueError: ``src`` is an EXPORT or a WORKDIR (nothing to convert), a file of unknown
        type, or a directory with several candidate weight files.
    """
    p = Path(src)
    layout = detect_layout(p)
    if layout is Layout.EXPORT:
        raise ValueError(
            f"{p} is already a {layout.value}: load it with wfvae_jax.load_pretrained; "
            "nothing to convert"
        )
    if layout is Layout.WORKDIR:
        raise ValueError(
            f"{p} is a {layout.value}, not a PyTorch checkpoint: load it with "
            f"wfvae_jax.io.checkpoint.load_train_checkpoint, or use {p / WORKDIR_EXPORT}"
        )
    weights = reference_weights(p) if p.is_dir() else p
    name = weights.name.lower()
    if not (
        name.endswith((SAFETENSORS_SUFFIX, SAFETENSORS_INDEX_SUFFIX))
        or weights.suffix.lower() in TORCH_SUFFIXES
    ):
        raise ValueError(
            f"{weights}: unknown checkpoint file type; expected {SAFETENSORS_SUFFIX}, "
            f"{SAFETENSORS_INDEX_SUFFIX}, one of {', '.join(TORCH_SUFFIXES)}, or a directory"
        )
    config = weights.parent / CONFIG_NAME
    return ReferenceFiles(weights, config if config.is_file() else None)
