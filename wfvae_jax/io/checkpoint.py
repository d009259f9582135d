"""Every on-disk checkpoint layout wfvae_jax reads or writes, and the loaders that take any.

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

Owners: the layouts' names and :func:`detect_layout` are :mod:`.layouts`'; EXPORT is
:mod:`.export`'s, WORKDIR :mod:`.workdir`'s; REFERENCE weight files are found by
:mod:`.torch_files` and read by their format's reader (torch zip, safetensors); the key names
inside a reference state dict are the converter's (:mod:`wfvae_jax.io.convert`). This module
keeps what spans layouts (:func:`load_model`, :func:`load_model_lc_settings`,
:func:`locate_reference`) and re-exports the owners' public names, so that
``wfvae_jax.io.checkpoint`` is the one import for checkpoint I/O.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.io.export import (
    ARRAY_SUFFIX,
    is_orbax_export,
    load_export_config,
    load_lc_settings,
    load_pretrained,
    save_pretrained,
)
from wfvae_jax.io.layouts import (
    CONFIG_NAME,
    DATA_ITEM,
    EXPORT_PARAMS,
    META_ITEM,
    OP_PART,
    PARTS,
    STATE_ITEM,
    WORKDIR_CHECKPOINTS,
    WORKDIR_EXPORT,
    WORKDIR_ITEMS,
    Layout,
    check_part,
    detect_layout,
    is_export_dir,
    is_workdir,
    param_template,
)
from wfvae_jax.io.torch_files import (
    SAFETENSORS_INDEX_SUFFIX,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    reference_weights,
)
from wfvae_jax.io.workdir import (
    checkpoints_dir,
    load_train_checkpoint,
    restore_workdir_params,
    workdir_lc_settings,
)

__all__ = [
    "ARRAY_SUFFIX",
    "CONFIG_NAME",
    "DATA_ITEM",
    "EXPORT_PARAMS",
    "META_ITEM",
    "OP_PART",
    "PARTS",
    "STATE_ITEM",
    "WORKDIR_CHECKPOINTS",
    "WORKDIR_EXPORT",
    "WORKDIR_ITEMS",
    "Layout",
    "ReferenceFiles",
    "checkpoints_dir",
    "detect_layout",
    "is_export_dir",
    "is_orbax_export",
    "is_workdir",
    "load_export_config",
    "load_lc_settings",
    "load_model",
    "load_model_lc_settings",
    "load_pretrained",
    "load_train_checkpoint",
    "locate_reference",
    "param_template",
    "reference_weights",
    "save_pretrained",
]


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
    check_part(part)
    if checkpoint is not None and detect_layout(checkpoint) is not Layout.WORKDIR:
        params, config = load_pretrained(checkpoint, part=part)
        return params, config, f"checkpoint {os.path.abspath(os.fspath(checkpoint))}"
    src = workdir if workdir is not None else checkpoint
    params, config, step = restore_workdir_params(src, use_ema, step, part)
    which = "EMA" if use_ema else "raw"
    return params, config, f"workdir {os.path.abspath(os.fspath(src))} (step {step}, {which})"


def load_model_lc_settings(
    checkpoint: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    step: int | None = None,
) -> Any:
    """The LC-VAE settings (``wfvae_jax.lc.LCSettings``) of what :func:`load_model` loads with
    the same arguments, or ``None`` for a plain WF-VAE: an EXPORT's ``config.json["lc"]``
    (:func:`load_lc_settings`), a WORKDIR step's run config
    (:func:`wfvae_jax.io.workdir.workdir_lc_settings`)."""
    if checkpoint is not None and detect_layout(checkpoint) is not Layout.WORKDIR:
        return load_lc_settings(checkpoint)
    return workdir_lc_settings(workdir if workdir is not None else checkpoint, step)


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
