"""Functional inference API: ``encode(params, video, config)`` and ``decode(params, z, config)``.

Both are jit-compiled per (config, dtype, shape), run in float32 or bfloat16 (parameters stay
float32 and are cast per layer; norms and softmax compute in float32), and validate their input.
``t_chunk`` switches to Causal Cache chunked inference (``wfvae_jax.causal_cache``), which gives the
same result on bounded memory.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.config import WFVAEConfig, nearest_valid_num_frames  # noqa: F401 (re-export)
from wfvae_jax.model import WFVAE
from wfvae_jax.posterior import DiagonalGaussian

Params = Any


def _check_finite(x: Any, what: str) -> None:
    if isinstance(x, jax.core.Tracer):
        return  # under jit values are unknown; callers validate before tracing
    if not bool(np.isfinite(np.asarray(x, np.float32)).all()):
        raise ValueError(f"{what} contains NaN or Inf values")


def validate_video(video: Any, config: WFVAEConfig | None = None) -> None:
    """Checks a video batch for :func:`encode`.

    Expects ``(B, T, H, W, 3)`` channels-last, ``T = 1 + 4k``, ``H`` and ``W`` divisible by 8,
    finite values (nominally in [-1, 1]).
    Raises:
      ValueError: naming the problem; for a bad T, the nearest valid T. Never truncates.
    """
    shape = tuple(np.shape(video))
    if len(shape) != 5:
        hint = " (add a batch axis: video[None])" if len(shape) == 4 else ""
        raise ValueError(f"video must be (B, T, H, W, 3) channels-last, got shape {shape}{hint}")
    b, t, h, w, c = shape
    if c != 3:
        hint = " (channels-first input? move axis 1 to the end)" if shape[1] == 3 else ""
        raise ValueError(f"video must have 3 channels (RGB) last, got {c}{hint}; shape {shape}")
    (config or WFVAEConfig()).check_num_frames(t)
    if h % 8 or w % 8 or h == 0 or w == 0:
        raise ValueError(f"H and W must be positive multiples of 8, got H={h}, W={w}")
    _check_finite(video, "video")


def validate_latent(z: Any, config: WFVAEConfig) -> None:
    """Checks a latent ``(B, t, h, w, latent_dim)`` for :func:`decode`; raises ValueError."""
    shape = tuple(np.shape(z))
    if len(shape) != 5:
        raise ValueError(f"latent must be (B, t, h, w, {config.latent_dim}), got shape {shape}")
    if shape[-1] != config.latent_dim:
        raise ValueError(
            f"latent has {shape[-1]} channels but the config's latent_dim is {config.latent_dim}"
        )
    _check_finite(z, "latent")


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _encode(params: Params, video: jnp.ndarray, config: WFVAEConfig, dtype: Any):
    post, taps, _ = WFVAE(config, dtype).apply({"params": params}, video, method=WFVAE.encode)
    return post, taps


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _decode(params: Params, z: jnp.ndarray, config: WFVAEConfig, dtype: Any):
    dec, taps, _ = WFVAE(config, dtype).apply({"params": params}, z, method=WFVAE.decode)
    return dec, taps


def encode(
    params: Params,
    video: jnp.ndarray,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    return_taps: bool = False,
) -> DiagonalGaussian | tuple[DiagonalGaussian, tuple[jnp.ndarray, jnp.ndarray]]:
    """Encodes a video to the posterior ``q(z | x)``.

    Args:
      params: the ``params`` pytree (``load_pretrained`` or ``init_params``).
      video: ``(B, T, H, W, 3)`` float, values in [-1, 1], ``T = 1 + 4k``, H and W multiples of 8.
      config: the model's :class:`WFVAEConfig`.
      dtype: compute dtype, ``jnp.float32`` or ``jnp.bfloat16``.
      t_chunk: video frames per Causal Cache chunk (a multiple of 4) for bounded memory;
        ``None`` encodes the whole clip at once. Both give the same result (layernorm models).
      return_taps: also return the encoder's ``(W2, W3)`` coefficients (direct mode only).
    Returns:
      :class:`DiagonalGaussian` with ``mean``/``logvar`` ``(B, 1 + k, H/8, W/8, latent_dim)``
      (dtype ``dtype``); with ``return_taps``, ``(posterior, (W2, W3))``.
    Raises:
      ValueError: bad shape, frame count, spatial size, non-finite values, or bad ``t_chunk``.
    Source: reference ``WFVAEModel.encode``.
    """
    validate_video(video, config)
    if t_chunk is not None:
        if return_taps:
            raise ValueError("return_taps is only available without t_chunk")
        from wfvae_jax.causal_cache import encode_chunked

        return encode_chunked(params, video, config, t_chunk, dtype=dtype)
    post, taps = _encode(params, jnp.asarray(video), config, dtype)
    return (post, taps) if return_taps else post


def decode(
    params: Params,
    z: jnp.ndarray,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    return_taps: bool = False,
) -> jnp.ndarray | tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """Decodes a latent to video.

    Args:
      z: ``(B, t, h, w, latent_dim)`` latent (e.g. ``posterior.mode()``).
      t_chunk: latent frames per Causal Cache chunk (>= 1), or ``None`` for direct decoding.
      return_taps: also return the decoder's ``(W2^, W3^)`` coefficients for the WL loss.
    Returns:
      ``(B, 4t - 3, 8h, 8w, 3)`` in ``dtype`` (nominally [-1, 1], not clipped); with
      ``return_taps``, ``(video, (W2^, W3^))``.
    Raises:
      ValueError: wrong rank or channel count, non-finite values, bad ``t_chunk``.
    Source: reference ``WFVAEModel.decode``.
    """
    validate_latent(z, config)
    if t_chunk is not None:
        if return_taps:
            raise ValueError("return_taps is only available without t_chunk")
        from wfvae_jax.causal_cache import decode_chunked

        return decode_chunked(params, z, config, t_chunk, dtype=dtype)
    dec, taps = _decode(params, jnp.asarray(z), config, dtype)
    return (dec, taps) if return_taps else dec
