"""LC-VAE latent compression.

Modules:
- :mod:`.transforms`: Multi-WT of a latent (3D Haar + temporal Haar levels), its exact inverse,
  band naming, and ``compress(z, mask)``.
- :mod:`.masks`: the reference's handcrafted masks (JSON files inside the package) and Top-k.
- :mod:`.model`: :class:`LCSettings` (the one description of a compression) and :class:`LCVAE`,
  a WF-VAE whose forward pass compresses the latent (through ``WFVAE.process_latent``).

The latent frequency analysis that uses these (``wfvae analyze``) is
:mod:`wfvae_jax.commands.analyze`.

The transform and mask names are re-exported here: ``from wfvae_jax import lc; lc.multi_wt(z)``.
"""

from __future__ import annotations

from wfvae_jax.lc.masks import (
    HANDCRAFTED_PATHS,
    KEEP_RATIOS,
    MASK_DIR,
    MASK_FORMAT,
    available_masks,
    band_mask,
    fixed_mask,
    keep_ratio_mask,
    load_mask,
    pack,
    topk_mask,
    topk_position_mask,
    unpack,
)
from wfvae_jax.lc.model import LCVAE, MASK_KINDS, LCSettings, make_compressor
from wfvae_jax.lc.transforms import (
    DEFAULT_LEVELS,
    EXACT_TEMPORAL_SCALE,
    REFERENCE_TEMPORAL_SCALE,
    SCALES,
    TIME_MODES,
    band_names,
    channel_names,
    compress,
    inverse_multi_wt,
    multi_wt,
    num_channels,
    required_frames,
    temporal_path,
)

__all__ = [
    "DEFAULT_LEVELS",
    "EXACT_TEMPORAL_SCALE",
    "HANDCRAFTED_PATHS",
    "KEEP_RATIOS",
    "LCSettings",
    "LCVAE",
    "MASK_DIR",
    "MASK_FORMAT",
    "MASK_KINDS",
    "REFERENCE_TEMPORAL_SCALE",
    "SCALES",
    "TIME_MODES",
    "available_masks",
    "band_mask",
    "band_names",
    "channel_names",
    "compress",
    "fixed_mask",
    "inverse_multi_wt",
    "keep_ratio_mask",
    "load_mask",
    "make_compressor",
    "multi_wt",
    "num_channels",
    "pack",
    "required_frames",
    "temporal_path",
    "topk_mask",
    "topk_position_mask",
    "unpack",
]
