"""The WORKDIR layout: a training run's orbax checkpoints, read here (written by
``wfvae_jax.train.checkpointing``).

``WORKDIR/checkpoints/<step>/`` holds the items ``state`` (the TrainState), ``data`` (the grain
iterators) and ``meta`` (JSON: the run config, the model's WFVAEConfig, the data manifest); the
layout table is in :mod:`wfvae_jax.io.checkpoint`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.io.layouts import (
    META_ITEM,
    STATE_ITEM,
    WORKDIR_CHECKPOINTS,
    on_device,
    param_template,
)


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


def restore_workdir_params(
    workdir: str | os.PathLike, use_ema: bool, step: int | None, part: str | None = None
) -> tuple[Any, WFVAEConfig, int]:
    """``(params, config, step)``: the ``ema_params`` (``use_ema``) or ``params`` of checkpoint
    ``step`` (``None``: the latest) of a training WORKDIR, only the ``part`` half if given
    (``"encoder"``/``"decoder"``), read by orbax's partial restore (never the optimizer state).

    Raises:
      FileNotFoundError: no ``checkpoints/``, no saved step, no such step, or no ``meta`` item.
      ValueError: the checkpoint does not hold the requested parameters for its config.
    """
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
    template = on_device(param_template(config))
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
    params, config, _ = restore_workdir_params(workdir, use_ema, step)
    return params, config


def workdir_lc_settings(workdir: str | os.PathLike, step: int | None = None) -> Any:
    """The LC-VAE settings (``wfvae_jax.lc.LCSettings``) a WORKDIR's checkpoint ``step``
    (``None``: the latest) was trained with: its run config (``meta["config"]``), ``model.lc``
    when ``enabled``; ``None`` for a plain WF-VAE, no saved step or no readable run config."""
    import orbax.checkpoint as ocp

    ckpt_dir = checkpoints_dir(workdir)
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
