"""Haar wavelet transforms, channels-last: the reference's fixed-kernel convolutions as butterflies.

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


def haar_filters(ndim: int, scale: float) -> np.ndarray:
    """The Haar analysis filters the transforms below apply, as explicit kernels.

    Returns ``(2**ndim, 2, ..., 2)`` float64 (``ndim`` kernel axes): one kernel per subband, in
    subband order (3D: ``SUBBANDS_3D``; 2D: the reference's ``aa, ad, da, dd``), each ``scale``
    times an outer product of ``[1, 1]`` (low) and ``[1, -1]`` (high) along its axes. The
    converter checks the reference's stored wavelet kernels against these.
    Source: reference ``causalvideovae/model/modules/wavelet.py`` (``HaarWaveletTransform3D`` /
    ``HaarWaveletTransform2D`` buffers).
    """
    lo, hi = np.array([1.0, 1.0]), np.array([1.0, -1.0])
    out = []
    for s in _order(ndim):
        k = np.ones((), np.float64)
        for axis in range(ndim):
            bit = (s >> (ndim - 1 - axis)) & 1
            k = np.multiply.outer(k, hi if bit else lo)
        out.append(k * scale)
    return np.stack(out)


def _order(ndim: int) -> tuple[int, ...]:
    """Output position of each butterfly band (bit per axis, axis 0 most significant)."""
    return (0, 2, 1, 3) if ndim == 2 else tuple(range(2**ndim))  # 2D: aa, ad, da, dd


# The transforms are written as sums and differences of even/odd samples (a butterfly per
# axis), not as the reference's stride-2 grouped convolutions: the same function (the filters
# are outer products of [1, 1] and [1, -1], see ``haar_filters``), one fused elementwise pass for
# XLA instead of a grouped conv that XLA:CPU runs ~10x slower through a buffer ~4x its input.


def _analysis(x: jnp.ndarray, ndim: int, scale: float) -> jnp.ndarray:
    """(N, *spatial, C) -> (N, *spatial/2, n_sub*C), subband-major."""
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    half = tuple(d // 2 for d in spatial)
    # float32 sums whatever the dtype, as the reference's conv accumulates (fused: no copy).
    acc = jnp.promote_types(x.dtype, jnp.float32)
    # (N, s1/2, 2, s2/2, 2, .., C): each axis's pair index next to it.
    y = x.astype(acc).reshape(n, *(v for h in half for v in (h, 2)), c)
    bands = [y]
    for axis in range(ndim):
        pos = 2 + axis  # this axis's pair index (the earlier axes' are reduced away)
        nxt = []
        for b in bands:
            even = lax.index_in_dim(b, 0, pos, keepdims=False)
            odd = lax.index_in_dim(b, 1, pos, keepdims=False)
            nxt += [even + odd, even - odd]  # L, H along this axis
        bands = nxt
    order = _order(ndim)
    y = jnp.stack([bands[s] for s in order], axis=-2)  # (N, *half, n_sub, C)
    return (y * scale).astype(x.dtype).reshape(n, *half, len(order) * c)


def _synthesis(coeffs: jnp.ndarray, ndim: int, scale: float) -> jnp.ndarray:
    """Inverse of :func:`_analysis`: (N, *spatial, n_sub*C) -> (N, *2*spatial, C).

    Per axis, from the last: even = L + H, odd = L - H, interleaved (the transposed stride-2
    conv with the same filters, whose windows do not overlap).
    """
    n_sub = 2**ndim
    if coeffs.shape[-1] % n_sub:
        raise ValueError(
            f"inverse Haar {ndim}D needs a channel count divisible by {n_sub}, "
            f"got {coeffs.shape[-1]}"
        )
    n, spatial = coeffs.shape[0], coeffs.shape[1:-1]
    c = coeffs.shape[-1] // n_sub
    acc = jnp.promote_types(coeffs.dtype, jnp.float32)
    y = coeffs.astype(acc).reshape(n, *spatial, n_sub, c) * scale
    order = _order(ndim)
    bands = [None] * n_sub
    for j, s in enumerate(order):
        bands[s] = y[..., j, :]  # (N, *spatial, C)
    for axis in reversed(range(ndim)):
        ax = 1 + axis
        merged = []
        for lo, hi in zip(bands[0::2], bands[1::2], strict=True):
            pair = jnp.stack([lo + hi, lo - hi], axis=ax + 1)  # (.., s_axis, 2, ..)
            shape = list(lo.shape)
            shape[ax] *= 2
            merged.append(pair.reshape(shape))
        bands = merged
    return bands[0].astype(coeffs.dtype)


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
