"""Causal Cache: lossless chunked encode/decode as one ``lax.scan`` over temporal chunks.

Paper Sec. 3.3 (Eq. 4) and supplementary Sec. 9; reference ``WFVAEModel.tile_encode`` /
``tile_decode`` with ``enable_cached``. The first frame alone initialises every causal layer's
cache (the first frame's causal padding happens there and only there); then a ``lax.scan``
carries the cache pytree over equal chunks; a remainder chunk is a final step. The result equals
direct inference up to float rounding, for any ``T = 1 + d k`` (``d = temporal_downsample``, 4 or
8 for the 8x8x8 variant).

What each layer caches (Eq. 4: a causal conv with time kernel ``k`` and stride ``s`` needs the
last ``k - s`` frames of its time-padded input; see ``wfvae_jax.core.layers``):
- ``CausalConv3d`` 3x3x3, stride 1: 2 frames; the 2x time downsampler (k 3, s 2): 1 frame;
  1x1x1 convs and the Haar transforms (k 2, s 2): none, but the forward Haar replicates and the
  inverse drops the first frame only in the first chunk.
- the decoder's time upsamplers: their last input frame (linear interpolation of frame i needs
  i-1).
Linear time interpolation also needs frame ``i + 1``: each decoder chunk but the last reads one
latent frame of lookahead, the next chunk's first. It runs through the layers before up2's time
upsampler (the latent-rate part of the decoder) once: their caches include it and its outputs
there are carried to the next chunk, which starts after it. up2's upsampler drops what it
interpolated from it (keeping one frame for up1's upsampler in the 8x variant), so the
full-resolution layers do no extra work either. The reference (``cache_offset``: 1 frame up to
up2's upsampler, 2 after it, 4 after up1's in the 8x variant) recomputes the lookahead in the
next chunk, carries it to the output and discards ``d`` video frames per chunk there.
Unlike the reference's ``tile_decode`` (whose auto-selected chunks avoid the cases), any chunk
size is exact here: a chunk ending one latent frame before the end still gets its lookahead, and a
final chunk of one latent frame is still upsampled in time.

GroupNorm normalises over all frames of a clip, so a chunk cannot reproduce it: chunked
inference raises ValueError for ``norm_type="groupnorm"`` (every released WF-VAE uses layernorm).

Choosing ``t_chunk``: peak memory grows with the chunk, time per frame falls with it. Encoder
chunks are in video frames (a multiple of ``temporal_downsample``), decoder chunks in latent
frames (``WFVAEConfig.latent_chunk`` converts).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from wfvae_jax.core import compile_options
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.core.model import WFVAE
from wfvae_jax.core.posterior import DiagonalGaussian
from wfvae_jax.inference import sharding

# Incremented each time a chunk step is traced; tests use it to check compile-once behaviour.
TRACE_COUNT = {"encode": 0, "decode": 0}


@jax.jit(static_argnames=("config", "dtype", "mesh"))
def _enc_step(params, x, cache, config, dtype, mesh=None):
    TRACE_COUNT["encode"] += 1
    with sharding.constrain(mesh):  # also shards the returned cache, i.e. the scan carry
        post, _, cache = WFVAE(config, dtype).apply(
            {"params": params}, x, cache, method=WFVAE.encode
        )
    return jnp.concatenate([post.mean, post.logvar], -1), cache


@jax.jit(static_argnames=("config", "dtype", "lookahead", "mesh"))
def _dec_step(params, z, cache, config, dtype, lookahead, mesh=None):
    TRACE_COUNT["decode"] += 1
    with sharding.constrain(mesh):
        dec, _, cache = WFVAE(config, dtype).apply(
            {"params": params}, z, cache, lookahead, method=WFVAE.decode
        )
    return dec, cache


@compile_options.jit(static_argnames=("config", "t_chunk", "dtype", "mesh"))
def _encode_chunked(params, video, config, t_chunk, dtype, mesh=None):
    b, t = video.shape[:2]
    moments0, cache = _enc_step(params, video[:, :1], None, config, dtype, mesh)
    rest = video[:, 1:]
    n = (t - 1) // t_chunk
    outs = [moments0]
    if n:
        # Chunks are read from the video inside the body: scanning over a stacked copy of them
        # would add a copy of the whole clip to the plan, so memory would grow with T.
        def body(c, i):
            x = jax.lax.dynamic_slice_in_dim(video, 1 + i * t_chunk, t_chunk, axis=1)
            m, c = _enc_step(params, x, c, config, dtype, mesh)
            return c, m

        cache, ms = jax.lax.scan(body, cache, jnp.arange(n))  # (n, B, t_chunk/d, h, w, 2L)
        outs.append(ms.swapaxes(0, 1).reshape(b, -1, *ms.shape[3:]))
    if (t - 1) % t_chunk:
        m, _ = _enc_step(params, rest[:, n * t_chunk :], cache, config, dtype, mesh)
        outs.append(m)
    return jnp.concatenate(outs, axis=1)


def encode_chunked(
    params: Any,
    video: jnp.ndarray,
    config: WFVAEConfig,
    t_chunk: int,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
) -> DiagonalGaussian:
    """Chunked :func:`wfvae_jax.encode`: same shapes and result, memory bounded by ``t_chunk``.

    Args:
      video: ``(B, T, H, W, 3)``, ``T = 1 + d k`` with ``d = config.temporal_downsample``
        (validated by ``wfvae_jax.encode``).
      t_chunk: video frames per chunk after the first frame, a multiple of ``d``.
      mesh: an Auto-axes mesh from ``inference.sharding`` (inputs already placed), or None.
    Raises:
      ValueError: groupnorm config, or ``t_chunk`` not a positive multiple of ``d``
        (``WFVAEConfig.check_t_chunk``).
    """
    config.check_t_chunk(t_chunk, "encode", direct_ok=False)
    moments = _encode_chunked(params, video, config, t_chunk, dtype, mesh)
    return DiagonalGaussian.from_moments(moments)


@compile_options.jit(static_argnames=("config", "t_chunk", "dtype", "mesh"))
def _decode_chunked(params, z, config, t_chunk, dtype, mesh=None):
    b, t = z.shape[:2]
    if t == 1:
        return _dec_step(params, z, None, config, dtype, 0, mesh)[0]
    # Output chunks: frame 0, then n_scan chunks of t_chunk latent frames, then the rest (1 to
    # t_chunk frames). Each step before the last also reads the next chunk's first frame (its
    # lookahead) through the latent-rate layers and carries that in the cache, so the next step
    # reads only the frames after it: every latent frame runs through those layers once.
    out0, cache = _dec_step(params, z[:, :2], None, config, dtype, 1, mesh)  # frame 0 + lookahead
    n_scan = (t - 2) // t_chunk
    outs = [out0]
    if n_scan:

        def body(c, i):
            zc = jax.lax.dynamic_slice_in_dim(z, 2 + i * t_chunk, t_chunk, axis=1)
            y, c = _dec_step(params, zc, c, config, dtype, 1, mesh)
            return c, y  # (B, d * t_chunk, H, W, 3)

        cache, ys = jax.lax.scan(body, cache, jnp.arange(n_scan))
        outs.append(ys.swapaxes(0, 1).reshape(b, -1, *ys.shape[3:]))
    # The last step: the carried lookahead frame and what follows it (possibly nothing).
    y, _ = _dec_step(params, z[:, 2 + n_scan * t_chunk :], cache, config, dtype, 0, mesh)
    outs.append(y)
    return jnp.concatenate(outs, axis=1)


def decode_chunked(
    params: Any,
    z: jnp.ndarray,
    config: WFVAEConfig,
    t_chunk: int,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
) -> jnp.ndarray:
    """Chunked :func:`wfvae_jax.decode`: same result, memory bounded by ``t_chunk``.

    Args:
      z: ``(B, t, h, w, latent_dim)``.
      t_chunk: latent frames per chunk after the first (each chunk but the last also reads the
        next one's first frame as its lookahead), ``>= 1``.
      mesh: as for :func:`encode_chunked`.
    Returns:
      ``(B, d(t - 1) + 1, 8h, 8w, 3)``, ``d = config.temporal_downsample``.
    Raises:
      ValueError: groupnorm config or ``t_chunk < 1`` (``WFVAEConfig.check_t_chunk``).
    """
    config.check_t_chunk(t_chunk, "decode", direct_ok=False)
    return _decode_chunked(params, z, config, t_chunk, dtype, mesh)


def lower_encode_chunked(
    params: Any,
    video: Any,
    config: WFVAEConfig,
    t_chunk: int,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.stages.Lowered:
    """AOT lowering of what :func:`encode_chunked` runs (same checks and arguments; ``video``
    and the params may be ``jax.ShapeDtypeStruct``)."""
    config.check_t_chunk(t_chunk, "encode", direct_ok=False)
    return _encode_chunked.lower(params, video, config, t_chunk, dtype, mesh)


def lower_decode_chunked(
    params: Any,
    z: Any,
    config: WFVAEConfig,
    t_chunk: int,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.stages.Lowered:
    """AOT lowering of what :func:`decode_chunked` runs (same checks and arguments)."""
    config.check_t_chunk(t_chunk, "decode", direct_ok=False)
    return _decode_chunked.lower(params, z, config, t_chunk, dtype, mesh)
