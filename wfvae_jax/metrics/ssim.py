"""Structural similarity per frame, as the reference eval computes it.

Source: causalvideovae/eval/cal_ssim.py of PKU-YuanGroup/WF-VAE (``ssim`` and
``calculate_ssim_function``), itself the SSIM of Wang et al. (2004) with an 11x11 Gaussian
window, sigma 1.5, K1 = 0.01, K2 = 0.03 and data range 1.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.metrics.frames import check_video_shapes, map_frame_chunks, to_unit_range

WINDOW_SIZE = 11
SIGMA = 1.5
_C1 = 0.01**2
_C2 = 0.03**2


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = SIGMA) -> np.ndarray:
    """1-D normalised Gaussian taps, (size,) float64; equals ``cv2.getGaussianKernel``."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: jnp.ndarray, taps: jnp.ndarray) -> jnp.ndarray:
    """Separable 'valid' Gaussian filter of (N, H, W) -> (N, H - 10, W - 10).

    cal_ssim.py filters the full frame and crops 5 pixels on each side, which keeps exactly
    the outputs whose window lies inside the frame, i.e. a valid correlation.
    """
    k = taps.shape[0]
    lhs = img[..., None]
    # HIGHEST: default GPU float32 convolutions may run in TF32, which visibly moves SSIM.
    conv = jax.lax.conv_general_dilated
    dn = ("NHWC", "HWIO", "NHWC")
    hi = jax.lax.Precision.HIGHEST
    out = conv(lhs, taps.reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn, precision=hi)
    out = conv(out, taps.reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=dn, precision=hi)
    return out[..., 0]


@jax.jit
def _ssim_frames(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    b, t, h, w, c = x.shape
    # One (H, W) plane per (video, frame, channel): the reference scores channels separately.
    x = jnp.moveaxis(to_unit_range(x), -1, 2).reshape(b * t * c, h, w)
    y = jnp.moveaxis(to_unit_range(y), -1, 2).reshape(b * t * c, h, w)
    # Variances are shift-invariant; centring each plane first avoids the float32
    # cancellation in E[x^2] - E[x]^2 without changing the result.
    cx = jnp.mean(x, axis=(1, 2), keepdims=True)
    cy = jnp.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - cx, y - cy
    taps = jnp.asarray(gaussian_window(), jnp.float32)
    n = x.shape[0]
    stats = _filter_valid(jnp.concatenate([xc, yc, xc * xc, yc * yc, xc * yc]), taps)
    mxc, myc, exx, eyy, exy = (stats[i * n : (i + 1) * n] for i in range(5))
    var_x = exx - mxc**2
    var_y = eyy - myc**2
    cov = exy - mxc * myc
    mx, my = mxc + cx, myc + cy
    ssim_map = ((2 * mx * my + _C1) * (2 * cov + _C2)) / (
        (mx**2 + my**2 + _C1) * (var_x + var_y + _C2)
    )
    per_channel = jnp.mean(ssim_map, axis=(1, 2)).reshape(b, t, c)
    return jnp.mean(per_channel, axis=-1)


def ssim(x: Any, y: Any, *, frame_chunk: int | None = None) -> jax.Array:
    """SSIM of every frame of ``y`` against ``x``.

    Frames are clamped to [-1, 1] and mapped to [0, 1] (data range 1). For every frame and
    channel the local means, variances and covariance come from an 11x11 Gaussian window
    (sigma 1.5, population statistics), the SSIM map is averaged over the window positions
    that lie fully inside the frame, and the per-channel values are averaged. This is
    cal_ssim.py, which equals ``skimage.metrics.structural_similarity(..., data_range=1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1)``.
    Colour is not converted to luma: RGB channels are scored separately and averaged.

    Args:
      x: reference videos, (B, T, H, W, C), float, nominally in [-1, 1]; H, W >= 11.
      y: distorted or reconstructed videos, same shape and range.
      frame_chunk: frames per device call (``None``: as many as fit in
        ``metrics.frames.PIXELS_PER_CALL`` pixels). Memory is bounded by the chunk; the values
        do not depend on it.

    Returns:
      float32 array (B, T); 1 for identical frames.

    Raises:
      ValueError: shapes differ, are not 5-D, frames smaller than 11x11, non-float input.

    Differences from the reference eval: computed in float32 on the arrays themselves rather
    than in float64 on frames written to mp4 and read back (see ``psnr``); the reference
    reports the mean over videos per frame index, which the caller gets from ``.mean(0)``.
    """
    check_video_shapes(x, y, "ssim")
    if min(np.shape(x)[2], np.shape(x)[3]) < WINDOW_SIZE:
        raise ValueError(f"ssim: frames must be at least 11x11, got {np.shape(x)[2:4]}")
    return map_frame_chunks(_ssim_frames, x, y, frame_chunk)
