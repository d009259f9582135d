"""Peak signal-to-noise ratio per frame, as the reference eval computes it.

Source: causalvideovae/eval/cal_psnr.py (``calculate_psnr``) and scripts/eval.py of
PKU-YuanGroup/WF-VAE.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from wfvae_jax.metrics.frames import check_video_shapes, map_frame_chunks, to_unit_range


@jax.jit
def _psnr_frames(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    mse = jnp.mean(jnp.square(to_unit_range(x) - to_unit_range(y)), axis=(2, 3, 4))
    # Peak is 1 on [0, 1]; mse == 0 gives +inf, which is the honest value.
    return -10.0 * jnp.log10(mse)


def psnr(x: Any, y: Any, *, frame_chunk: int | None = None) -> jax.Array:
    """PSNR in dB of every frame of ``y`` against ``x``.

    Each frame is clamped to [-1, 1] and mapped to [0, 1]; the mean squared error is taken
    over (H, W, C) of that frame and PSNR = 10 log10(1 / MSE) (peak 1), exactly
    ``20 log10(1 / sqrt(MSE))`` of cal_psnr.py.

    Args:
      x: reference videos, (B, T, H, W, C), float, nominally in [-1, 1].
      y: distorted or reconstructed videos, same shape and range.
      frame_chunk: frames per device call (``None``: as many as fit in
        ``metrics.frames.PIXELS_PER_CALL`` pixels). Memory is bounded by the chunk; the values
        do not depend on it.

    Returns:
      float32 array (B, T) of PSNR in dB; +inf for a frame with MSE 0.

    Raises:
      ValueError: shapes differ or are not 5-D, or the inputs are not floating point.

    Differences from the reference eval:
      * The reference measures videos written to mp4 and decoded again (uint8, lossy codec);
        here the arrays are compared directly (clamped, not quantised), so the numbers
        isolate the model from the video codec.
      * The reference averages the per-frame values over a batch and reports 100 dB when that
        mean is infinite; here the per-frame values are returned and aggregation (mean over
        frames and videos, with whatever cap for identical frames) is left to the caller.
    """
    check_video_shapes(x, y, "psnr")
    return map_frame_chunks(_psnr_frames, x, y, frame_chunk)
