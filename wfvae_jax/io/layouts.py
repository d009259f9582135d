"""The names of the checkpoint layouts and how a path is told apart; shared by their owners.

The layouts (EXPORT, WORKDIR, REFERENCE) are listed in :mod:`wfvae_jax.io.checkpoint`; EXPORT is
read and written by :mod:`.export`, WORKDIR read by :mod:`.workdir` (written by
``wfvae_jax.train.checkpointing``), REFERENCE weight files found by :mod:`.torch_files`.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import jax

from wfvae_jax.core.config import WFVAEConfig

CONFIG_NAME = "config.json"  # the config file of EXPORT and REFERENCE directories
EXPORT_PARAMS = "params"
WORKDIR_CHECKPOINTS = "checkpoints"
WORKDIR_EXPORT = "export"
STATE_ITEM, DATA_ITEM, META_ITEM = "state", "data", "meta"
WORKDIR_ITEMS = (STATE_ITEM, DATA_ITEM, META_ITEM)


class Layout(enum.Enum):
    """Which of the layouts (``wfvae_jax.io.checkpoint``'s docstring) a path is."""

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


def on_device(template: Any) -> Any:
    """``template`` with every leaf placed on the first local device, so orbax restores
    ``jax.Array``s there: the weights exist once, where they run. Host numpy params would be
    copied to the device at every jitted call instead (XLA:CPU included: a second copy of the
    weights per call; ``docs/performance.md``)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), template
    )


PARTS = ("encoder", "decoder")  # the top-level subtrees of the parameters
# The half each op runs: load_pretrained(path, part=OP_PART[op]) holds no unused weights.
OP_PART = {"encode": "encoder", "decode": "decoder"}


def check_part(part: str | None) -> None:
    """Raises ValueError unless ``part`` is ``None`` (both halves), ``"encoder"`` or
    ``"decoder"``."""
    if part is not None and part not in PARTS:
        raise ValueError(f"part must be None (both), 'encoder' or 'decoder', got {part!r}")
