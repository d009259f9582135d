"""Reconstruction (NLL), KL and wavelet (WL) terms of the WF-VAE generator loss.

Source: reference ``causalvideovae/model/losses/perceptual_loss.py`` (PKU-YuanGroup/WF-VAE @
d858bee), ``LPIPSWithDiscriminator3D.forward`` lines 126-153, and
``causalvideovae/model/utils/distrib_utils.py`` lines 8 and 19-26 (KL); paper Eq. 5 (WL loss).

All three reduce with a SUM over every non-batch element divided by a batch count, not a mean:
the reconstruction term by ``B*T`` frames, the KL and WL terms by ``B`` videos. Their magnitudes
therefore grow with the resolution and frame count, and the loss weights (kl_weight=1e-6,
wavelet_weight=0.1, perceptual_weight=1) were tuned for exactly this scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LPIPSFn = Callable[[jax.Array, jax.Array], jax.Array]

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


def _check_video_pair(inputs: jax.Array, reconstructions: jax.Array) -> None:
    if inputs.ndim != 5:
        raise ValueError(f"expected (B, T, H, W, C) videos, got shape {inputs.shape}")
    if inputs.shape != reconstructions.shape:
        raise ValueError(
            f"inputs and reconstructions differ in shape: {inputs.shape} vs {reconstructions.shape}"
        )


def reconstruction_loss(
    inputs: jax.Array,
    reconstructions: jax.Array,
    *,
    perceptual_weight: float = 1.0,
    lpips_fn: LPIPSFn | None = None,
    loss_type: str = "l1",
    logvar: float | jax.Array = 0.0,
) -> jax.Array:
    """Reference ``nll_loss``: per-pixel loss + broadcast per-frame LPIPS, summed, over B*T.

    Reference (perceptual_loss.py:129-144), with frames ``f = (b, t)`` and ``N = B*T``::

        rec[f, c, h, w] = |x - y|[f, c, h, w] + perceptual_weight * lpips(x_f, y_f)   # l.133-136
        nll = rec / exp(logvar) + logvar                                              # l.137
        nll_loss = sum(nll) / N                                                       # l.144

    The LPIPS value of shape (N, 1, 1, 1) is broadcast over all ``C*H*W`` elements of its frame
    before the sum, so with ``logvar = 0``::

        nll_loss = (1/N) * [sum |x - y| + perceptual_weight * C*H*W * sum_f lpips_f]
                 = C*H*W * (mean |x - y| + perceptual_weight * mean_f lpips_f)

    i.e. ``C*H*W`` (196608 at 256x256 RGB) times the familiar "mean L1 + lambda * mean LPIPS".
    With ``logvar != 0`` the ``+ logvar`` is likewise added once per element (``C*H*W*logvar``).

    Args:
        inputs: ``(B, T, H, W, C)`` float videos, the reference range [-1, 1].
        reconstructions: same shape as ``inputs``.
        perceptual_weight: LPIPS weight; ``0`` skips LPIPS entirely (``lpips_fn`` is not called).
        lpips_fn: ``(N, H, W, C) x (N, H, W, C) -> (N,)`` per-frame LPIPS on [-1, 1] images
            (the reference uses VGG LPIPS); required when ``perceptual_weight > 0``.
        loss_type: ``"l1"`` (absolute error) or ``"l2"`` (squared error), per element.
        logvar: the NLL log-variance (fixed at 0 in the reference).

    Returns:
        Scalar float32 ``nll_loss``.

    Raises:
        ValueError: on shape mismatch, non-5-D input, unknown ``loss_type``, a missing
            ``lpips_fn`` or an ``lpips_fn`` output that is not ``(N,)``.
    """
    _check_video_pair(inputs, reconstructions)
    if loss_type not in ("l1", "l2"):
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    b, t, h, w, c = inputs.shape
    n_frames = b * t
    per_frame_elems = h * w * c
    x = inputs.astype(jnp.float32)
    y = reconstructions.astype(jnp.float32)
    diff = x - y
    pixel = jnp.abs(diff) if loss_type == "l1" else jnp.square(diff)
    total = jnp.sum(pixel)
    if perceptual_weight > 0:
        if lpips_fn is None:
            raise ValueError("perceptual_weight > 0 needs an lpips_fn (or set it to 0)")
        frames_x = inputs.reshape(n_frames, h, w, c)
        frames_y = reconstructions.reshape(n_frames, h, w, c)
        p = lpips_fn(frames_x, frames_y)
        if p.shape != (n_frames,):
            raise ValueError(f"lpips_fn must return shape ({n_frames},), got {p.shape}")
        # Summing the broadcast (N, C, H, W) map equals C*H*W times the per-frame sum.
        total = total + perceptual_weight * per_frame_elems * jnp.sum(p.astype(jnp.float32))
    n_elems = n_frames * per_frame_elems
    logvar = jnp.asarray(logvar, jnp.float32)
    return (total / jnp.exp(logvar) + n_elems * logvar) / n_frames


def kl_loss(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed per video, averaged over the batch.

    Reference: ``DiagonalGaussianDistribution.kl`` (distrib_utils.py:24-26) sums
    ``0.5 * (mean**2 + var - 1 - logvar)`` over every non-batch axis, giving ``(B,)``; the loss
    takes ``sum(kl) / B`` (perceptual_loss.py:145-146). ``logvar`` is clamped to [-30, 20] first
    as the reference's posterior does (distrib_utils.py:8); clamping an already clamped value is a
    no-op, so passing ``DiagonalGaussian.logvar`` is fine.

    Args:
        mean: ``(B, ...)`` posterior mean, e.g. ``(B, 1+k, H/8, W/8, latent_dim)``.
        logvar: same shape as ``mean``, natural-log variance.

    Returns:
        Scalar float32, unweighted (multiply by ``kl_weight``).

    Raises:
        ValueError: if the shapes differ or the input is 0-D.
    """
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar differ in shape: {mean.shape} vs {logvar.shape}")
    if mean.ndim < 1:
        raise ValueError("mean must have a leading batch axis")
    mean = mean.astype(jnp.float32)
    logvar = jnp.clip(logvar.astype(jnp.float32), LOGVAR_MIN, LOGVAR_MAX)
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return kl / mean.shape[0]


def wavelet_loss(
    enc_w2: jax.Array, dec_w2: jax.Array, enc_w3: jax.Array, dec_w3: jax.Array
) -> jax.Array:
    """WL loss (paper Eq. 5): L1 between encoder and decoder wavelet taps, summed, over B.

    Reference (perceptual_loss.py:148-151)::

        wl = sum|enc_l1 - dec_l1| / B + sum|enc_l2 - dec_l2| / B

    with ``B = inputs.shape[0]``; the reference's ``*_l1`` are the W^(2) coefficient sets
    (here ``*_w2``), its ``*_l2`` the W^(3) ones (``*_w3``), in the order
    ``(enc_w2, dec_w2, enc_w3, dec_w3)`` (modeling_wfvae.py:617-621).
    Neither side is detached. The norm is an element-wise absolute difference (L1), not a
    Euclidean norm.

    Args:
        enc_w2, dec_w2: same-shape ``(B, ...)`` arrays (the W^(2) level).
        enc_w3, dec_w3: same-shape ``(B, ...)`` arrays (the W^(3) level).

    Returns:
        Scalar float32, unweighted (multiply by ``wavelet_weight``).

    Raises:
        ValueError: if a pair differs in shape or the batch sizes differ.
    """
    pairs = ((enc_w2, dec_w2), (enc_w3, dec_w3))
    batch = enc_w2.shape[0] if enc_w2.ndim else None
    total = jnp.zeros((), jnp.float32)
    for enc, dec in pairs:
        if enc.shape != dec.shape:
            raise ValueError(f"encoder/decoder taps differ in shape: {enc.shape} vs {dec.shape}")
        if enc.ndim < 1 or enc.shape[0] != batch:
            raise ValueError("all taps must share the leading batch axis")
        total = total + jnp.sum(jnp.abs(enc.astype(jnp.float32) - dec.astype(jnp.float32)))
    return total / batch
