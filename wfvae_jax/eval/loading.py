"""Model weights for evaluation: a converted checkpoint directory or a training workdir.

Training workdir layout (``train.py``; ``wfvae_jax.train.checkpointing``)::

    WORKDIR/checkpoints/<step>/state/   the TrainState pytree (``params``, ``ema_params``, ...)
    WORKDIR/checkpoints/<step>/meta/    JSON with the model config under "model"
                                        (``WFVAEConfig.to_dict``) and the run config

For other layouts the model config may instead be ``WORKDIR/config.json`` (a WFVAEConfig dict,
or a run config holding it under "model"), and a step may hold its train state as its single
item (e.g. orbax's ``default``). Only the wanted parameter subtree is read (orbax partial
restore), so optimizer and discriminator states are never loaded.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from wfvae_jax.config import WFVAEConfig

_MODEL_CONFIG_FILES = ("config.json", "model_config.json")


def load_workdir_config(workdir: str | os.PathLike) -> WFVAEConfig:
    """The model config in ``WORKDIR/config.json`` (or ``model_config.json``).

    Raises:
      FileNotFoundError: no ``config.json`` / ``model_config.json`` in ``workdir``.
      ValueError: the file holds no WF-VAE config.
    """
    workdir = os.fspath(workdir)
    for name in _MODEL_CONFIG_FILES:
        path = os.path.join(workdir, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            return _config_from_dict(json.load(f), path)
    raise FileNotFoundError(
        f"no model config ({' or '.join(_MODEL_CONFIG_FILES)}) in training workdir {workdir}"
    )


def _config_from_dict(d: dict, where: str) -> WFVAEConfig:
    if isinstance(d.get("model"), dict):
        d = d["model"]
    if "latent_dim" not in d:
        raise ValueError(f"{where} holds no WF-VAE model config (no 'latent_dim' key)")
    return WFVAEConfig.from_dict(d)


def _step_config(step_dir: str, workdir: str) -> WFVAEConfig:
    """The model config saved with a checkpoint (its ``meta`` item), else the workdir's."""
    meta_dir = os.path.join(step_dir, "meta")
    if os.path.isdir(meta_dir):
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
            meta = ckptr.restore(meta_dir)
        if isinstance(meta, dict) and isinstance(meta.get("model"), dict):
            return _config_from_dict(meta, meta_dir)
    return load_workdir_config(workdir)


def _step_item_dir(step_dir: str) -> str:
    """The item directory inside a CheckpointManager step (``default``, ``state``, ...)."""
    if os.path.isfile(os.path.join(step_dir, "_METADATA")):
        return step_dir  # a single unnamed item written straight into the step directory
    items = sorted(
        d
        for d in os.listdir(step_dir)
        if os.path.isdir(os.path.join(step_dir, d)) and not d.startswith((".", "_"))
    )
    for preferred in ("state", "train_state", "default"):
        if preferred in items:
            return os.path.join(step_dir, preferred)
    if len(items) == 1:
        return os.path.join(step_dir, items[0])
    raise ValueError(f"cannot tell which item of {step_dir} holds the train state: {items}")


def load_train_checkpoint(
    workdir: str | os.PathLike, use_ema: bool = True, step: int | None = None
) -> tuple[Any, WFVAEConfig]:
    """WF-VAE parameters from a training workdir (layout in the module docstring).

    Args:
      workdir: the directory ``train.py`` wrote.
      use_ema: return the EMA shadow ``ema_params`` (default, what the paper evaluates) instead
        of the raw ``params``.
      step: checkpoint step; ``None`` takes the latest.
    Returns:
      ``(params, config)``: float32 ``jax.Array`` pytree and its :class:`WFVAEConfig`.
    Raises:
      FileNotFoundError: no config or no checkpoint (or not the requested step).
      ValueError: the checkpoint does not hold the requested parameters for this config.
    """
    params, config, _ = _restore_train_params(workdir, use_ema, step)
    return params, config


def _restore_train_params(
    workdir: str | os.PathLike, use_ema: bool, step: int | None
) -> tuple[Any, WFVAEConfig, int]:
    workdir = os.path.abspath(os.fspath(workdir))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"no checkpoints directory {ckpt_dir}")
    with ocp.CheckpointManager(ckpt_dir) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint saved in {ckpt_dir}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; steps: {steps}")
    step_dir = os.path.join(ckpt_dir, str(step))
    if not os.path.isdir(step_dir):
        raise FileNotFoundError(
            f"checkpoint step {step} is not in {step_dir} (orbax's default step naming expected)"
        )
    config = _step_config(step_dir, workdir)
    item_dir = _step_item_dir(step_dir)
    key = "ema_params" if use_ema else "params"
    from wfvae_jax.model import init_params

    template = {key: jax.eval_shape(lambda: init_params(config, jax.random.key(0)))}
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
                f"checkpoint {item_dir} has no '{key}' matching the workdir's model config: {e}"
            ) from e
    return restored[key], config, int(step)


def load_model(
    checkpoint: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    use_ema: bool = True,
    step: int | None = None,
) -> tuple[Any, WFVAEConfig, str]:
    """``(params, config, description)`` from exactly one of ``checkpoint`` / ``workdir``.

    ``checkpoint`` is a converted directory (``wfvae_jax.load_pretrained``); ``workdir`` a
    training workdir (:func:`load_train_checkpoint`). ``description`` names the source for
    reports. Raises ValueError unless exactly one is given; see the loaders for the rest.
    """
    if (checkpoint is None) == (workdir is None):
        raise ValueError("give exactly one of --checkpoint (converted dir) or --workdir")
    if checkpoint is not None:
        from wfvae_jax.checkpoint import load_pretrained

        params, config = load_pretrained(checkpoint)
        return params, config, f"checkpoint {os.path.abspath(os.fspath(checkpoint))}"
    params, config, step = _restore_train_params(workdir, use_ema, step)
    which = "EMA" if use_ema else "raw"
    return params, config, f"workdir {os.path.abspath(os.fspath(workdir))} (step {step}, {which})"
