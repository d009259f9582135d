"""LC-VAE Multi-WT of a latent, its inverse (Multi-IWT), and masked compression.

Source: LC-VAE reference (1mather/LC-VAE-code @ 141c160),
``causalvideovae/model/vae/WVAE_Compressed_TopK_multi_wavelet.py``
(``TemporalCompressedLatentProcessor.compress_forward`` / ``decompress_backward``) with the
transforms of its ``causalvideovae/model/modules/wavelet.py``; LC-VAE supplementary Sec. B
(Multi-WT). The masks are in :mod:`wfvae_jax.lc.masks`.

Multi-WT (``levels`` = L extra temporal levels, 2 in LC-VAE)
  1. a 3D Haar transform of the latent ``(B, T, H, W, C)`` -> 8 subbands ``LLL..HHH`` in (t, h, w)
     order, subband-major (``wavelets.haar3d``);
  2. L temporal-only Haar levels, each applied to *every* channel (a full temporal packet, not
     only the low band) and concatenated ``[low | high]`` on the channel axis, as the reference.
  The result has ``N = 8 * 2**L * C`` channels; channel ``i`` holds packet ``p = i // (8C)``,
  3D subband ``s = (i // C) % 8`` and latent channel ``c = i % C``, i.e.
  ``i = (t_L ... t_1)_2 * 8C + s * C + c`` with ``t_j`` the low/high bit of temporal level ``j``
  and the last level most significant. Bands are named ``"<t_L..t_1>-<3D subband>"``, e.g.
  ``"LH-HLL"`` (level 2 low, level 1 high, then 3D subband HLL); see :func:`band_names`.

The reference's handcrafted masks, read as above, act on the *temporal path* ``t_L..t_1 t_0``
(``t_0`` the 3D subband's temporal letter) and keep all four spatial subbands of a path: its mask
generator splits the N channels into 8 blocks of 4C named ``LLL..HHH``, and block ``b`` is exactly
path ``b`` in (t_2, t_1, t_0) bit order. So "keep LLL, LLH, LHL, HLL" (the 50% mask) keeps the
temporal paths with at most one high-pass step, with every spatial subband; see
:func:`temporal_path`.

Time axis. WF-VAE latents are causal, ``T = 1 + k``: frame 0 encodes only the first video frame.
- ``time_mode="causal"`` (default): frames ``1..T-1`` get the non-causal Multi-WT (needs
  ``T - 1`` divisible by ``2**(L+1)``, so T = 9 for 33-frame clips), and frame 0 gets only the
  spatial Haar, placed in the all-temporal-low bands of coefficient frame 0 (the other bands of
  that frame are zero). This equals WF-VAE's first-frame replication at every level, rescaled by
  1/sqrt(2) per level so the transform stays orthonormal (Parseval holds exactly); the inverse is
  the adjoint, so it ignores frame 0's temporal-high coefficients (always zero in the forward's
  range, and masking keeps them zero). ``T = 1`` (an image latent) is allowed.
- ``time_mode="noncausal"``: the reference's setting (its encoder is non-causal and 32-frame clips
  give T = 8); T must be divisible by ``2**(L+1)``. The reference pads an odd T by replicating
  the first frame in each forward level but never drops it in the inverse, so only such T
  round-trip there; here any other T raises ValueError instead of silently changing T.

Scales. ``"exact"`` (default): 3D ``1/(2*sqrt(2))``, temporal ``1/sqrt(2)``; orthonormal, so the
inverse is exact and energies add up (Parseval). ``"reference"``: the reference's literals 0.3536
(3D) and 0.7071 (temporal), for checkpoints trained with them; a forward+inverse round trip then
scales the latent by ``8 * 0.3536**2 * (2 * 0.7071**2)**L`` (1.00022 for L = 2).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from wfvae_jax.core.wavelets import (
    EXACT_SCALE_3D,
    REFERENCE_SCALE_3D,
    SUBBANDS_3D,
    haar3d,
    inverse_haar3d,
)

DEFAULT_LEVELS = 2
REFERENCE_TEMPORAL_SCALE = 0.7071
EXACT_TEMPORAL_SCALE = 1.0 / math.sqrt(2.0)
SCALES = {
    "exact": (EXACT_SCALE_3D, EXACT_TEMPORAL_SCALE),
    "reference": (REFERENCE_SCALE_3D, REFERENCE_TEMPORAL_SCALE),
}
TIME_MODES = ("causal", "noncausal")


# ----------------------------------------------------------------------------- band naming


def _check_levels(levels: int) -> None:
    if not isinstance(levels, int) or levels < 0:
        raise ValueError(f"levels must be an int >= 0, got {levels!r}")


def band_names(levels: int = DEFAULT_LEVELS) -> tuple[str, ...]:
    """Names of the ``8 * 2**levels`` Multi-WT bands in channel-block order.

    ``levels=0`` gives ``SUBBANDS_3D``; otherwise ``"<t_L..t_1>-<3D subband>"`` (see module doc).
    """
    _check_levels(levels)
    names = []
    for p in range(2**levels):
        prefix = "".join("H" if (p >> j) & 1 else "L" for j in reversed(range(levels)))
        names.extend(f"{prefix}-{s}" if levels else s for s in SUBBANDS_3D)
    return tuple(names)


def temporal_path(band: str) -> str:
    """Temporal low/high path ``t_L..t_1 t_0`` of a band name, e.g. ``"LH-HLL"`` -> ``"LHH"``."""
    prefix, _, sub = band.rpartition("-")
    if sub not in SUBBANDS_3D or any(ch not in "LH" for ch in prefix):
        raise ValueError(f"not a Multi-WT band name: {band!r}")
    return prefix + sub[0]


def num_channels(latent_dim: int, levels: int = DEFAULT_LEVELS) -> int:
    """Channel count ``8 * 2**levels * latent_dim`` of the Multi-WT coefficients."""
    _check_levels(levels)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    return 8 * 2**levels * latent_dim


def channel_names(latent_dim: int, levels: int = DEFAULT_LEVELS) -> tuple[str, ...]:
    """``"<band>/c<k>"`` for every Multi-WT channel, in channel order."""
    return tuple(f"{b}/c{c}" for b in band_names(levels) for c in range(latent_dim))


# ----------------------------------------------------------------------------- transforms


def scale_factors(scale: str) -> tuple[float, float]:
    """``(3D Haar scale, temporal Haar scale)`` of a ``SCALES`` name (``"exact"`` or
    ``"reference"``); raises ValueError naming the choices for any other name."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    return SCALES[scale]


def required_frames(levels: int = DEFAULT_LEVELS, time_mode: str = "causal") -> str:
    """Human-readable latent frame-count rule, e.g. ``"T = 1 + 8m"``."""
    step = 2 ** (levels + 1)
    return f"T = 1 + {step}m" if time_mode == "causal" else f"T = {step}m"


def _check_latent(z: jnp.ndarray, levels: int, time_mode: str) -> None:
    _check_levels(levels)
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if z.ndim != 5:
        raise ValueError(f"expected a latent (B, T, H, W, C), got shape {z.shape}")
    t, h, w = z.shape[1:4]
    if h % 2 or w % 2:
        raise ValueError(f"Multi-WT needs even latent H and W, got {h}x{w}")
    step = 2 ** (levels + 1)
    bad = (t - 1) % step if time_mode == "causal" else (t % step or t == 0)
    if bad:
        hint = (
            f" (WF-VAE videos of 1 + {4 * step}m frames)"
            if time_mode == "causal"
            else " (the reference's non-causal setting)"
        )
        raise ValueError(
            f"Multi-WT with levels={levels}, time_mode={time_mode!r} needs "
            f"{required_frames(levels, time_mode)} latent frames{hint}; got T={t}. "
            "No padding is applied: crop or choose a clip length that fits."
        )


def _temporal_haar(x: jnp.ndarray, s: float) -> jnp.ndarray:
    """One temporal Haar level on every channel: ``(B, 2t, h, w, N)`` -> ``(B, t, h, w, 2N)``.

    Low ``(x[2i] + x[2i+1]) * s`` then high ``(x[2i] - x[2i+1]) * s`` on the channel axis, as the
    reference ``HaarWaveletTemporalTransform`` (stride-2 conv along time, ``cat([low, high])``).
    """
    b, t, h, w, n = x.shape
    pairs = x.reshape(b, t // 2, 2, h, w, n)
    a, c = pairs[:, :, 0], pairs[:, :, 1]
    return jnp.concatenate([(a + c) * s, (a - c) * s], axis=-1)


def _inverse_temporal_haar(y: jnp.ndarray, s: float) -> jnp.ndarray:
    """Inverse of :func:`_temporal_haar` (reference ``InverseHaarWaveletTemporalTransform``)."""
    b, t, h, w, n2 = y.shape
    lo, hi = jnp.split(y, 2, axis=-1)
    x = jnp.stack([(lo + hi) * s, (lo - hi) * s], axis=2)
    return x.reshape(b, 2 * t, h, w, n2 // 2)


def _forward_noncausal(z: jnp.ndarray, levels: int, s3d: float, st: float) -> jnp.ndarray:
    c = haar3d(z, scale=s3d, causal=False)
    for _ in range(levels):
        c = _temporal_haar(c, st)
    return c


def _inverse_noncausal(c: jnp.ndarray, levels: int, s3d: float, st: float) -> jnp.ndarray:
    for _ in range(levels):
        c = _inverse_temporal_haar(c, st)
    return inverse_haar3d(c, scale=s3d, causal=False)


def _first_frame_gain(levels: int, st: float) -> float:
    # Pairing frame 0 with a replica of itself doubles its low-pass sums (sqrt(2) too much with
    # exact scales) at the 3D level and at each temporal level; undoing that keeps it orthonormal.
    return (st * math.sqrt(2.0)) ** levels / math.sqrt(2.0)


def _forward_first(z0: jnp.ndarray, levels: int, s3d: float, st: float) -> jnp.ndarray:
    """Frame 0 ``(B, 1, H, W, C)`` -> coefficient frame 0 ``(B, 1, h, w, N)``.

    The 3D Haar of the replicated pair ``(z0, z0)`` has zero temporal-high subbands, and its
    temporal-low half (``LLL, LLH, LHL, LHH``) is the spatial Haar of z0 in the 3D subband order.
    """
    c = z0.shape[-1]
    low = haar3d(jnp.concatenate([z0, z0], 1), scale=s3d, causal=False)[..., : 4 * c]
    low = low * _first_frame_gain(levels, st)
    pad = jnp.zeros((*low.shape[:-1], num_channels(c, levels) - 4 * c), z0.dtype)
    return jnp.concatenate([low, pad], axis=-1)


def _inverse_first(c0: jnp.ndarray, levels: int, s3d: float, st: float) -> jnp.ndarray:
    """Adjoint of :func:`_forward_first`: uses only the all-temporal-low bands of frame 0."""
    c = c0.shape[-1] // (8 * 2**levels)
    # Exact scales: 1 / gain; the reference scales mirror its transposed-conv inverse instead.
    low = c0[..., : 4 * c] * _first_frame_gain(levels, st) * 2.0
    pair = inverse_haar3d(jnp.concatenate([low, jnp.zeros_like(low)], -1), s3d, causal=False)
    return pair[:, :1]


def multi_wt(
    z: jnp.ndarray,
    levels: int = DEFAULT_LEVELS,
    scale: str = "exact",
    time_mode: str = "causal",
) -> jnp.ndarray:
    """Multi-level wavelet transform (Multi-WT) of a latent.

    Args:
      z: latent ``(B, T, H, W, C)``, float; H, W even; T as ``time_mode`` requires.
      levels: temporal Haar levels after the 3D Haar (LC-VAE: 2).
      scale: ``"exact"`` (orthonormal) or ``"reference"`` (the reference's 0.3536 / 0.7071).
      time_mode: ``"causal"`` (T = 1 + 2**(levels+1) m; WF-VAE latents) or ``"noncausal"``
        (T = 2**(levels+1) m; the reference's setting). See the module docstring.
    Returns:
      coefficients ``(B, T', H/2, W/2, 8 * 2**levels * C)``, dtype of ``z``, channel layout as
      :func:`band_names` x latent channel; ``T' = 1 + (T-1)/2**(levels+1)`` (causal) or
      ``T / 2**(levels+1)``.
    Raises:
      ValueError: bad shape, odd H/W, a frame count the levels cannot split, unknown option.
    Source: reference ``TemporalCompressedLatentProcessor.compress_forward`` (dwt3d, then
      ``temporal_wavelet_levels`` x dwt_temporal).
    """
    _check_latent(z, levels, time_mode)
    s3d, st = scale_factors(scale)
    if time_mode == "noncausal":
        return _forward_noncausal(z, levels, s3d, st)
    first = _forward_first(z[:, :1], levels, s3d, st)
    if z.shape[1] == 1:
        return first
    return jnp.concatenate([first, _forward_noncausal(z[:, 1:], levels, s3d, st)], axis=1)


def inverse_multi_wt(
    coeffs: jnp.ndarray,
    levels: int = DEFAULT_LEVELS,
    scale: str = "exact",
    time_mode: str = "causal",
) -> jnp.ndarray:
    """Inverse of :func:`multi_wt` (Multi-IWT): ``(B, T', h, w, N)`` -> ``(B, T, 2h, 2w, C)``.

    Exact (up to float rounding) for ``scale="exact"``; ``C = N / (8 * 2**levels)``. In causal
    mode frame 0 is rebuilt from coefficient frame 0's all-temporal-low bands only (the adjoint).
    Raises:
      ValueError: wrong rank, a channel count not divisible by ``8 * 2**levels``, bad option.
    Source: reference ``TemporalCompressedLatentProcessor.decompress_backward``.
    """
    _check_levels(levels)
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if coeffs.ndim != 5:
        raise ValueError(f"expected coefficients (B, T, h, w, N), got shape {coeffs.shape}")
    n = coeffs.shape[-1]
    per = 8 * 2**levels
    if n % per:
        raise ValueError(f"levels={levels} needs a channel count divisible by {per}, got {n}")
    s3d, st = scale_factors(scale)
    if time_mode == "noncausal":
        return _inverse_noncausal(coeffs, levels, s3d, st)
    first = _inverse_first(coeffs[:, :1], levels, s3d, st)
    if coeffs.shape[1] == 1:
        return first
    return jnp.concatenate([first, _inverse_noncausal(coeffs[:, 1:], levels, s3d, st)], axis=1)


# ----------------------------------------------------------------------------- compression


def check_mask(mask: jnp.ndarray | np.ndarray, n: int) -> None:
    """Raises ValueError unless ``mask``'s last axis has ``n`` channels (the coefficients')."""
    if mask.shape[-1] != n:
        raise ValueError(f"mask has {mask.shape[-1]} channels, coefficients have {n}")


def compress(
    z: jnp.ndarray,
    mask: jnp.ndarray | np.ndarray,
    levels: int = DEFAULT_LEVELS,
    scale: str = "exact",
    time_mode: str = "causal",
) -> jnp.ndarray:
    """LC-VAE latent compression ``inverse_multi_wt(mask * multi_wt(z))``.

    Args:
      z: latent ``(B, T, H, W, C)`` (see :func:`multi_wt` for T).
      mask: 0/1 (or soft) weights broadcastable to the coefficients with last axis
        ``8 * 2**levels * C``: ``(N,)`` for a fixed mask, ``(B, 1, 1, 1, N)`` for per-sample
        channel Top-k, or the coefficients' shape for position Top-k.
    Returns:
      the compressed latent, same shape and dtype as ``z``. With an all-ones mask and exact
      scale it equals ``z``; its energy equals the kept coefficients' energy (Parseval).
    Source: reference ``WVAE_Compressed_TopK_multi_wavelet.forward`` (compress_forward ->
      masked coefficients -> decompress_backward; the decoder then sees this latent).
    """
    coeffs = multi_wt(z, levels, scale, time_mode)
    mask = jnp.asarray(mask, coeffs.dtype)
    check_mask(mask, coeffs.shape[-1])
    return inverse_multi_wt(coeffs * mask, levels, scale, time_mode)
