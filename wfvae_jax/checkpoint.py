"""Save and load converted WF-VAE weights: ``DIR/config.json`` + an orbax ``DIR/params``.

Layout of a converted checkpoint directory::

    DIR/config.json   the WFVAEConfig (the reference's field names)
    DIR/params/       orbax StandardCheckpointer tree of float32 parameters
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wfvae_jax.config import WFVAEConfig


def save_pretrained(path: str | os.PathLike, params: Any, config: WFVAEConfig) -> None:
    """Writes ``params`` and ``config`` under ``path`` (created; existing params are replaced)."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), params, force=True)


def load_pretrained(path: str | os.PathLike) -> tuple[Any, WFVAEConfig]:
    """Loads a directory written by :func:`save_pretrained` / ``python -m wfvae_jax.convert``.

    Returns ``(params, config)``; params are float32 ``jax.Array``s on the default device.
    Raises:
      FileNotFoundError: ``path`` lacks ``config.json`` or ``params/`` (e.g. a reference release
        directory that has not been converted yet: run ``python -m wfvae_jax.convert``).
      ValueError: the stored parameters do not match the config.
    """
    path = os.path.abspath(os.fspath(path))
    cfg_file, params_dir = os.path.join(path, "config.json"), os.path.join(path, "params")
    for p in (cfg_file, params_dir):
        if not os.path.exists(p):
            hint = ""
            if os.path.exists(os.path.join(path, "diffusion_pytorch_model.safetensors")):
                hint = f" This is a PyTorch release: python -m wfvae_jax.convert {path} OUT_DIR"
            raise FileNotFoundError(f"{p} not found; not a wfvae_jax checkpoint.{hint}")
    config = WFVAEConfig.from_json(cfg_file)
    from wfvae_jax.model import init_params

    template = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    with ocp.StandardCheckpointer() as ckptr:
        try:
            params = ckptr.restore(params_dir, template)
        except (ValueError, KeyError) as e:
            raise ValueError(f"parameters in {params_dir} do not match {cfg_file}: {e}") from e
    return params, config
