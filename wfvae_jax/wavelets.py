"""Haar wavelet transforms as fixed-kernel grouped convolutions, channels-last.

Source: reference ``causalvideovae/model/modules/wavelet.py`` (PKU-YuanGroup/WF-VAE @ d858bee);
paper Sec. 3.1 (arXiv 2411.17459).

Layout and conventions
- Videos are ``(B, T, H, W, C)``; 2D transforms act per frame (any leading dims).
- Subband-major channel order, as the reference: a transform of a C-channel input has
  ``n_subbands * C`` channels, channel ``s * C + c`` holding subband ``s`` of input channel ``c``.
- Subband names give low/high per axis in (t, h, w) order. 3D: ``s = 4*t + 2*h + w``, so 0..7 are
  ``LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH`` (reference kernels h, g, hh, gh, h_v, g_v, hh_v, gh_v).
  2D follows the reference's ``aa, ad, da, dd``: ``LL, HL, LH, HH`` in (h, w) order, i.e. the band
  that is high in H comes before the one high in W. ``L`` is the sum of a pair, ``H`` the first
  element minus the second: ``H = (x[2i] - x[2i+1]) * scale``.
- Causal in time: the 3D forward transform replicates the first frame once before pairing frames,
  so ``T = 1 + 2k`` input frames give ``1 + k`` coefficient frames, the first from the pair
  ``(x0, x0)``; the inverse drops the first reconstructed frame. In a Causal Cache chunk after the
  first, no frame is replicated or dropped (``causal=False``), and chunks hold an even frame count.

Scales
- The reference's 3D kernels hold the literal ``0.3536`` (``REFERENCE_SCALE_3D``), not
  ``1/(2*sqrt(2)) = 0.35355339``; a forward+inverse round trip then scales the signal by
  ``8 * 0.3536**2 = 1.00026``. Converted checkpoints were trained with it, so the model uses it.
  ``EXACT_SCALE_3D`` gives an orthonormal transform (perfect reconstruction, Parseval).
- The 2D kernels are ``1/2``, which is exact.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

REFERENCE_SCALE_3D = 0.3536
EXACT_SCALE_3D = 1.0 / (2.0 * math.sqrt(2.0))
SCALE_2D = 0.5

SUBBANDS_3D = ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")
SUBBANDS_2D = ("LL", "HL", "LH", "HH")  # (h, w) letters, reference order aa, ad, da, dd


def _filters(ndim: int, scale: float) -> np.ndarray:
    """(n_sub, 2, ..., 2) Haar filters in subband order; each an outer product of [1, ±1]."""
    lo, hi = np.array([1.0, 1.0]), np.array([1.0, -1.0])
    out = []
    order = (0, 2, 1, 3) if ndim == 2 else range(2**ndim)  # 2D: the reference's aa, ad, da, dd
    for s in order:
        k = np.ones((), np.float64)
        for axis in range(ndim):
            bit = (s >> (ndim - 1 - axis)) & 1
            k = np.multiply.outer(k, hi if bit else lo)
        out.append(k * scale)
    return np.stack(out)


def _dn(ndim: int) -> lax.ConvDimensionNumbers:
    spatial = "THW"[-ndim:] if ndim == 3 else "HW"
    return lax.conv_dimension_numbers(
        (1,) * (ndim + 2),
        (1,) * (ndim + 2),
        ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"),
    )


def _analysis(x: jnp.ndarray, ndim: int, scale: float) -> jnp.ndarray:
    """Stride-2 grouped conv of (N, *spatial, C) -> (N, *spatial/2, n_sub*C), subband-major."""
    c = x.shape[-1]
    n_sub = 2**ndim
    f = _filters(ndim, scale)  # (n_sub, 2, .., 2)
    # Kernel (2,..,2, 1, C*n_sub): output channel g*n_sub + s applies filter s to input channel g.
    k = np.moveaxis(f, 0, -1)[..., None, :]  # (2,..,2, 1, n_sub)
    k = np.tile(k, (1,) * (ndim + 1) + (c,))
    y = lax.conv_general_dilated(
        x,
        jnp.asarray(k, x.dtype),
        window_strides=(2,) * ndim,
        padding="VALID",
        dimension_numbers=_dn(ndim),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )
    # (.., C, n_sub) channel-major -> (.., n_sub, C) subband-major.
    y = y.reshape(*y.shape[:-1], c, n_sub)
    return jnp.swapaxes(y, -1, -2).reshape(*y.shape[:-2], n_sub * c)


def _synthesis(coeffs: jnp.ndarray, ndim: int, scale: float) -> jnp.ndarray:
    """Transposed stride-2 conv of (N, *spatial, n_sub*C) -> (N, *2*spatial, C).

    Kernel 2 with stride 2 does not overlap, so the transposed conv is a 1x1 grouped conv that
    gives each output phase (one position of the 2x..x2 block), then depth-to-space. (XLA:CPU
    runs the equivalent lhs-dilated conv ~100x slower.)
    """
    n_sub = 2**ndim
    if coeffs.shape[-1] % n_sub:
        raise ValueError(
            f"inverse Haar {ndim}D needs a channel count divisible by {n_sub}, "
            f"got {coeffs.shape[-1]}"
        )
    c = coeffs.shape[-1] // n_sub
    spatial = coeffs.shape[1:-1]
    # Subband-major -> channel-major so each group sees its n_sub subbands.
    y = coeffs.reshape(*coeffs.shape[:-1], n_sub, c)
    y = jnp.swapaxes(y, -1, -2).reshape(coeffs.shape)
    f = _filters(ndim, scale).reshape(n_sub, n_sub)  # (subband, phase)
    k = np.tile(f, (1, c)).reshape((1,) * ndim + (n_sub, c * n_sub))
    y = lax.conv_general_dilated(
        y,
        jnp.asarray(k, coeffs.dtype),
        window_strides=(1,) * ndim,
        padding="VALID",
        dimension_numbers=_dn(ndim),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )  # (N, *spatial, C * n_sub): channel g*n_sub + phase
    y = y.reshape(coeffs.shape[0], *spatial, c, *(2,) * ndim)
    # (N, s1, s2, [s3], C, 2, 2, [2]) -> (N, s1, 2, s2, 2, [s3, 2], C)
    perm = [0]
    for i in range(ndim):
        perm += [1 + i, 2 + ndim + i]
    perm.append(1 + ndim)
    y = jnp.transpose(y, perm)
    return y.reshape(coeffs.shape[0], *(2 * n for n in spatial), c)


def haar2d(x: jnp.ndarray, scale: float = SCALE_2D) -> jnp.ndarray:
    """Per-frame 2D Haar analysis.

    Args:
      x: ``(..., H, W, C)`` with H and W even, any float dtype.
      scale: filter scale; ``1/2`` (the reference's, orthonormal).
    Returns:
      ``(..., H/2, W/2, 4*C)``, subbands ``LL, HL, LH, HH`` (subband-major), dtype of ``x``.
    Raises:
      ValueError: odd H or W, or fewer than 3 dims.
    Source: reference ``HaarWaveletTransform2D``.
    """
    if x.ndim < 3 or x.shape[-3] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar2d needs (..., H, W, C) with even H, W; got shape {x.shape}")
    lead = x.shape[:-3]
    y = _analysis(x.reshape(-1, *x.shape[-3:]), 2, scale)
    return y.reshape(*lead, *y.shape[1:])


def inverse_haar2d(coeffs: jnp.ndarray, scale: float = SCALE_2D) -> jnp.ndarray:
    """Inverse of :func:`haar2d`: ``(..., h, w, 4*C)`` -> ``(..., 2h, 2w, C)``.

    Source: reference ``InverseHaarWaveletTransform2D`` (conv_transpose2d, stride 2).
    """
    lead = coeffs.shape[:-3]
    y = _synthesis(coeffs.reshape(-1, *coeffs.shape[-3:]), 2, scale)
    return y.reshape(*lead, *y.shape[1:])


def haar3d(x: jnp.ndarray, scale: float = REFERENCE_SCALE_3D, causal: bool = True) -> jnp.ndarray:
    """3D Haar analysis over (T, H, W), causal in time.

    Args:
      x: ``(B, T, H, W, C)``; H, W even; ``T = 1 + 2k`` when ``causal`` (the first frame is
        replicated once), T even otherwise (a Causal Cache chunk after the first).
      scale: ``REFERENCE_SCALE_3D`` (0.3536, the reference's literal) or ``EXACT_SCALE_3D``.
      causal: replicate the first frame (direct inference, or the first chunk).
    Returns:
      ``(B, (T+1)//2, H/2, W/2, 8*C)`` when causal else ``(B, T/2, H/2, W/2, 8*C)``; subbands
      ``LLL..HHH`` subband-major; dtype of ``x``.
    Raises:
      ValueError: wrong rank, odd H/W, or a frame count that does not pair up.
    Source: reference ``HaarWaveletTransform3D`` (CausalConv3d, kernel 2, stride 2).
    """
    if x.ndim != 5:
        raise ValueError(f"haar3d needs (B, T, H, W, C), got shape {x.shape}")
    t = x.shape[1]
    if causal:
        if t % 2 != 1:
            raise ValueError(f"haar3d (causal) needs T = 1 + 2k frames, got T={t}")
        x = jnp.concatenate([x[:, :1], x], axis=1)
    elif t % 2:
        raise ValueError(f"haar3d (causal=False) needs an even T, got T={t}")
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"haar3d needs even H and W, got shape {x.shape}")
    return _analysis(x, 3, scale)


def inverse_haar3d(
    coeffs: jnp.ndarray, scale: float = REFERENCE_SCALE_3D, causal: bool = True
) -> jnp.ndarray:
    """Inverse of :func:`haar3d`: ``(B, t, h, w, 8*C)`` -> ``(B, 2t - 1, 2h, 2w, C)``.

    With ``causal`` the first reconstructed frame (the replica of frame 0) is dropped, giving
    ``2t - 1`` frames; without it (Causal Cache chunks after the first) all ``2t`` are kept.
    Source: reference ``InverseHaarWaveletTransform3D`` (conv_transpose3d stride 2, ``[:, :, 1:]``).
    """
    if coeffs.ndim != 5:
        raise ValueError(f"inverse_haar3d needs (B, T, H, W, 8C), got shape {coeffs.shape}")
    y = _synthesis(coeffs, 3, scale)
    return y[:, 1:] if causal else y
