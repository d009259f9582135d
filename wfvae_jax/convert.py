"""Convert reference PyTorch WF-VAE checkpoints to wfvae_jax (orbax checkpoint + config.json).

Usage::

    python -m wfvae_jax.convert SRC DST [--config CONFIG_JSON] [--no-ema]

SRC is a release directory (``config.json`` + ``diffusion_pytorch_model.safetensors``), a
``.safetensors`` file, or a training checkpoint ``*.ckpt`` (``ema_state_dict`` preferred with its
``module.`` prefix stripped, else ``state_dict["gen_model"]``, as the reference's
``WFVAEModel.init_from_ckpt``). A ``.ckpt`` carries no config: pass ``--config`` (a config.json, or
a name from ``wfvae_jax.config.NAMED_CONFIGS``). Reading ``.ckpt`` needs no torch and runs no
pickled code (see ``wfvae_jax.torch_io``).

Key mapping: our Flax modules mirror the reference's module tree, so a parameter path
``encoder/down1_1/conv1/kernel`` is the state-dict key ``encoder.down1.1.conv1.weight``; kernels are
transposed from ``(O, I, *k)`` to ``(*k, I, O)``; norm ``scale`` is ``weight``. The reference also
stores its fixed Haar kernels (``*wavelet_transform*``); they are checked against the expected
values (the 0.3536 / 0.5 literals) and not stored, since ours are constants.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from wfvae_jax import wavelets
from wfvae_jax.config import WFVAEConfig, get_config
from wfvae_jax.model import WFVAE

_WAVELET_KEY = re.compile(r"^(encoder|decoder)\.(inverse_)?wavelet_transform_\w+\.")
_HAAR3D_NAMES = ("h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v")
_HAAR2D_NAMES = ("aa", "ad", "da", "dd")


def flax_path_to_torch_key(path: tuple[str, ...]) -> str:
    """``("encoder", "down1_1", "conv1", "kernel")`` -> ``"encoder.down1.1.conv1.weight"``."""
    parts = []
    for p in path[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", p)
        parts.extend([m.group(1), m.group(2)] if m else [p])
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    return ".".join(parts + [leaf])


def _expected_wavelet(key: str) -> np.ndarray:
    if key.endswith(".conv.weight"):  # forward 3D: <kernel>_conv.conv.weight
        idx = _HAAR3D_NAMES.index(key.split(".")[-3].removesuffix("_conv"))
        return wavelets._filters(3, wavelets.REFERENCE_SCALE_3D)[idx][None, None]
    name = key.rsplit(".", 1)[-1]
    if name in _HAAR2D_NAMES:
        return wavelets._filters(2, wavelets.SCALE_2D)[_HAAR2D_NAMES.index(name)][None, None]
    return wavelets._filters(3, wavelets.REFERENCE_SCALE_3D)[_HAAR3D_NAMES.index(name)][None, None]


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        return np.transpose(value, (*range(2, value.ndim), 1, 0))
    return value


def torch_state_dict_to_params(
    state_dict: dict[str, np.ndarray], config: WFVAEConfig
) -> dict[str, Any]:
    """Maps a reference state dict to our params pytree (float32 numpy arrays).

    Raises:
      ValueError: listing every missing key, unexpected key and shape mismatch (a config that
        does not match the checkpoint shows up here), or a stored Haar kernel that is not the
        reference's fixed value.
    """
    template = jax.eval_shape(
        lambda: WFVAE(config).init(
            jax.random.key(0), np.zeros((1, 1, 8, 8, 3), np.float32), sample_posterior=False
        )
    )["params"]
    flat = flatten_dict(template)
    expected = {flax_path_to_torch_key(p): p for p in flat}
    missing, mismatched, bad_wavelets = [], [], []
    out = {}
    for key, path in expected.items():
        if key not in state_dict:
            missing.append(key)
            continue
        value = _to_flax(np.asarray(state_dict[key], np.float32), path[-1])
        if value.shape != tuple(flat[path].shape):
            mismatched.append(f"{key}: checkpoint {value.shape} vs model {tuple(flat[path].shape)}")
            continue
        out[path] = value
    unexpected = []
    for key, value in state_dict.items():
        if key in expected:
            continue
        if _WAVELET_KEY.match(key):
            try:
                ok = np.allclose(np.asarray(value, np.float64), _expected_wavelet(key), atol=1e-6)
            except (ValueError, IndexError):
                ok = False
            if not ok:
                bad_wavelets.append(key)
            continue
        unexpected.append(key)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {mismatched}")
    if bad_wavelets:
        problems.append(
            f"Haar kernels that differ from the reference's fixed values: {bad_wavelets}"
        )
    if problems:
        raise ValueError(
            "checkpoint does not match the WF-VAE config "
            f"(base_channels={config.base_channels}, latent_dim={config.latent_dim}, "
            f"norm_type={config.norm_type}, num_resblocks={config.encoder_num_resblocks}/"
            f"{config.decoder_num_resblocks}, connect_res_layer_num={config.connect_res_layer_num}"
            "):\n  " + "\n  ".join(problems)
        )
    return unflatten_dict(out)


def load_reference(
    src: str | os.PathLike, config: WFVAEConfig | str | None = None, use_ema: bool = True
) -> tuple[dict[str, Any], WFVAEConfig]:
    """Reads a reference checkpoint (see module docstring) -> (params, config)."""
    from wfvae_jax import torch_io

    src = os.fspath(src)
    if isinstance(config, str):
        config = WFVAEConfig.from_json(config) if config.endswith(".json") else get_config(config)
    if config is None:
        cfg_path = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), "config.json")
        if not os.path.exists(cfg_path):
            raise ValueError(
                f"no config for {src}: expected {cfg_path}, or pass --config (a config.json "
                "or a named config)"
            )
        config = WFVAEConfig.from_json(cfg_path)
    if src.endswith((".ckpt", ".pt", ".pth")):
        sd = torch_io.select_generator_state_dict(torch_io.load_torch_pickle(src), use_ema=use_ema)
    else:
        sd = torch_io.load_state_dict(src)
    return torch_state_dict_to_params(sd, config), config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="release dir, .safetensors, or training .ckpt")
    ap.add_argument("dst", help="output directory (orbax checkpoint + config.json)")
    ap.add_argument("--config", default=None, help="config.json or named config (for .ckpt)")
    ap.add_argument("--no-ema", action="store_true", help="take state_dict.gen_model, not EMA")
    args = ap.parse_args(argv)
    from wfvae_jax.checkpoint import save_pretrained

    params, config = load_reference(args.src, args.config, use_ema=not args.no_ema)
    save_pretrained(args.dst, params, config)
    n = sum(np.size(v) for v in jax.tree.leaves(params))
    print(f"converted {args.src} -> {args.dst}: {n:,} parameters", file=sys.stderr)


if __name__ == "__main__":
    main()


def params_to_torch_state_dict(params: Any) -> dict[str, np.ndarray]:
    """Inverse of :func:`torch_state_dict_to_params` (without the fixed Haar kernels).

    Gives the reference's key names and ``(O, I, *k)`` kernel layout, e.g. to load weights
    trained here into the PyTorch reference.
    """
    out = {}
    for path, value in flatten_dict(params).items():
        v = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            v = np.transpose(v, (v.ndim - 1, v.ndim - 2, *range(v.ndim - 2)))
        out[flax_path_to_torch_key(path)] = np.ascontiguousarray(v)
    return out
