"""LC-VAE subband masks: the reference's handcrafted masks (JSON files in this folder), Top-k.

Source: LC-VAE reference (1mather/LC-VAE-code @ 141c160), masks from
``causalvideovae/model/channel_name/``; LC-VAE supplementary Sec. D.1 (adaptive Top-k vs fixed
mask). A mask is a 0/1 vector over the ``8 * 2**levels * latent_dim`` Multi-WT channels; the
handcrafted ones keep whole temporal paths (band layout: ``wfvae_jax.lc.transforms``).

Our JSON form (``format: wfvae_jax.lc_mask/1``): ``latent_dim``, ``levels`` and ``keep``, a map
band name -> list of kept latent channels; every other channel is zeroed.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.lc.transforms import (
    DEFAULT_LEVELS,
    band_names,
    check_mask,
    num_channels,
    temporal_path,
)

MASK_DIR = Path(__file__).parent
MASK_FORMAT = "wfvae_jax.lc_mask/1"
KEEP_RATIOS = (0.25, 0.5, 0.75)
# Temporal paths (t_2 t_1 t_0) the reference's handcrafted keep-ratio masks retain.
HANDCRAFTED_PATHS = {
    0.25: ("LLL", "LLH"),
    0.5: ("LLL", "LLH", "LHL", "HLL"),
    0.75: ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH"),
}


def _mask_path(name: str) -> Path:
    return MASK_DIR / f"{name}.json"


def available_masks() -> tuple[str, ...]:
    """Names of the masks shipped in ``wfvae_jax/lc/masks`` (usable with :func:`load_mask`)."""
    return tuple(sorted(p.stem for p in MASK_DIR.glob("*.json")))


def load_mask(name_or_path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Reads a mask in our JSON form (``format: wfvae_jax.lc_mask/1``).

    The file names ``latent_dim``, ``levels`` and ``keep``: band name -> list of kept latent
    channels; every other channel is zeroed.
    Args:
      name_or_path: a shipped mask name (:func:`available_masks`) or a path to a JSON file.
    Returns:
      ``(mask, meta)``: float32 ``(8 * 2**levels * latent_dim,)`` of 0/1, and the JSON dict.
    Raises:
      FileNotFoundError: no such mask; ValueError: a malformed file (unknown band, channel out of
      range, wrong format tag).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = _mask_path(str(name_or_path))
    if not path.is_file():
        raise FileNotFoundError(
            f"no LC-VAE mask {str(name_or_path)!r}; shipped: {available_masks()}"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != MASK_FORMAT:
        raise ValueError(f"{path}: format must be {MASK_FORMAT!r}, got {meta.get('format')!r}")
    latent_dim, levels = int(meta["latent_dim"]), int(meta["levels"])
    bands = band_names(levels)
    mask = np.zeros(num_channels(latent_dim, levels), np.float32)
    for band, chans in meta["keep"].items():
        if band not in bands:
            raise ValueError(f"{path}: unknown band {band!r} for levels={levels}")
        for ch in chans:
            if not 0 <= ch < latent_dim:
                raise ValueError(f"{path}: channel {ch} of band {band} outside [0, {latent_dim})")
            mask[bands.index(band) * latent_dim + ch] = 1.0
    return mask, meta


@functools.lru_cache(maxsize=32)
def _shipped_mask(name: str) -> tuple[np.ndarray, dict[str, Any]]:
    # The model reads a shipped mask on every trace; the files do not change while running.
    mask, meta = load_mask(name)
    mask.setflags(write=False)
    return mask, meta


def keep_ratio_mask(ratio: float, latent_dim: int = 8, levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """The reference's handcrafted keep-ratio mask (25/50/75%), read from ``lc/masks/``.

    Keeps the temporal paths ``HANDCRAFTED_PATHS[ratio]`` with all spatial subbands and channels.
    Args:
      ratio: 0.25, 0.5 or 0.75. latent_dim: 8 or 16 (the shipped variants). levels: must be 2.
    Returns:
      float32 ``(8 * 2**levels * latent_dim,)`` of 0/1 with ``ratio * N`` ones.
    Raises:
      ValueError: a ratio, latent_dim or levels the reference defines no mask for.
    Source: reference ``causalvideovae/model/channel_name/multi_keep_ratio/``
      ``fixed_mask_{8,16}ch_ratio{25,50,75}_handcraft.json``.
    """
    if levels != DEFAULT_LEVELS:
        raise ValueError(f"the reference's masks are defined for levels=2, got {levels}")
    match = [r for r in KEEP_RATIOS if math.isclose(ratio, r)]
    if not match:
        raise ValueError(f"keep ratio must be one of {KEEP_RATIOS}, got {ratio}")
    name = f"keep{round(match[0] * 100)}_{latent_dim}ch"
    if name not in available_masks():
        raise ValueError(
            f"no shipped mask for latent_dim={latent_dim} (shipped: {available_masks()}); "
            "build one with band_mask(HANDCRAFTED_PATHS[ratio], latent_dim)"
        )
    mask, meta = _shipped_mask(name)
    if meta["latent_dim"] != latent_dim or meta["levels"] != levels:
        raise ValueError(f"mask {name} is for latent_dim={meta['latent_dim']}")
    return mask.copy()


def fixed_mask(latent_dim: int = 8, levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """The reference's fixed handcrafted mask: keep paths LLL, LLH, LHL, HLL (50% of channels).

    Same as ``keep_ratio_mask(0.5, latent_dim, levels)``; float32 ``(N,)`` of 0/1.
    """
    return keep_ratio_mask(0.5, latent_dim, levels)


def band_mask(paths: Sequence[str], latent_dim: int, levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """Mask keeping every band whose :func:`temporal_path` is in ``paths`` (all channels).

    ``paths`` are ``levels + 1`` letters of L/H, e.g. ``("LLL", "LLH")``; float32 ``(N,)``.
    Raises ValueError for a path of the wrong length or letters.
    """
    for p in paths:
        if len(p) != levels + 1 or set(p) - set("LH"):
            raise ValueError(f"temporal path {p!r} must be {levels + 1} letters of L/H")
    keep = np.array([temporal_path(b) in set(paths) for b in band_names(levels)], np.float32)
    return np.repeat(keep, latent_dim)


def topk_mask(coeffs: jnp.ndarray, k: int) -> jnp.ndarray:
    """Adaptive Top-k baseline: per sample, keep the ``k`` channels of highest energy.

    Energy is the sum of squares over (T, h, w) of each coefficient channel; ties go to the lower
    channel index. The mask carries no gradient.
    Args:
      coeffs: ``(B, T, h, w, N)`` Multi-WT coefficients. k: 0 <= k <= N (Top-50%: ``N // 2``).
    Returns:
      float ``(B, 1, 1, 1, N)`` of 0/1 with exactly ``k`` ones per sample.
    Source: LC-VAE supplementary Sec. D.1 (adaptive Top-50% vs fixed mask); the reference's
      dynamic mode ranks single positions instead, see :func:`topk_position_mask`.
    """
    if coeffs.ndim != 5:
        raise ValueError(f"expected coefficients (B, T, h, w, N), got shape {coeffs.shape}")
    n = coeffs.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    energy = jnp.sum(jnp.square(jax.lax.stop_gradient(coeffs)), axis=(1, 2, 3))  # (B, N)
    _, idx = jax.lax.top_k(energy, k)
    mask = jnp.zeros_like(energy).at[jnp.arange(energy.shape[0])[:, None], idx].set(1.0)
    return mask[:, None, None, None, :]


def topk_position_mask(coeffs: jnp.ndarray, keep_ratio: float) -> jnp.ndarray:
    """The reference's dynamic hard Top-k: per sample keep the ``round(M * keep_ratio)`` largest
    ``coeffs**2`` among all ``M = T*h*w*N`` positions.

    Returns a float 0/1 mask shaped like ``coeffs`` (no gradient). Ties: lower flat index wins.
    Source: reference ``global_topk_over_coeffs`` with ``use_hard=True`` (``hard_topk_mask``).
    """
    if not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in [0, 1], got {keep_ratio}")
    b = coeffs.shape[0]
    scores = jnp.square(jax.lax.stop_gradient(coeffs)).reshape(b, -1)
    k = int(round(scores.shape[1] * keep_ratio))
    _, idx = jax.lax.top_k(scores, k)
    mask = jnp.zeros_like(scores).at[jnp.arange(b)[:, None], idx].set(1.0)
    return mask.reshape(coeffs.shape)


def pack(coeffs: jnp.ndarray, mask: np.ndarray) -> jnp.ndarray:
    """Keeps only the channels a fixed 0/1 mask ``(N,)`` keeps: ``(..., N)`` -> ``(..., K)``.

    The compact latent LC-VAE's diffusion model works on; :func:`unpack` zero-pads it back.
    """
    idx = np.flatnonzero(np.asarray(mask))
    check_mask(np.asarray(mask), coeffs.shape[-1])
    return coeffs[..., idx]


def unpack(packed: jnp.ndarray, mask: np.ndarray) -> jnp.ndarray:
    """Inverse of :func:`pack`: scatters ``(..., K)`` into zeros ``(..., N)`` at kept channels."""
    mask = np.asarray(mask)
    idx = np.flatnonzero(mask)
    if packed.shape[-1] != idx.size:
        raise ValueError(f"packed has {packed.shape[-1]} channels, mask keeps {idx.size}")
    out = jnp.zeros((*packed.shape[:-1], mask.shape[-1]), packed.dtype)
    return out.at[..., idx].set(packed)
