"""A small video diffusion transformer (DiT with adaLN-Zero) over WF-VAE latents, in Flax.

Shapes (B batch, t latent frames, h x w latent positions, C = the VAE's latent_dim, p patch):

    latents  (B, t, h, w, C)
    tokens   (B, t * h/p * w/p, p * p * C)     one token per (frame, p x p patch)
    hidden   (B, N, width) + fixed 3-D sin-cos position embedding
    blocks   depth x [adaLN-Zero self-attention over all N tokens, adaLN-Zero MLP]
    output   (B, t, h, w, C)                   the velocity, same shape as the input

Source: Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023): patch tokens,
adaLN-Zero conditioning on the time step (zero-initialised modulation, so each block starts as
the identity), sin-cos position embeddings, a zero-initialised final layer; here the tokens of
every latent frame attend to each other (full spatio-temporal attention).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def sincos_embedding(positions: jnp.ndarray, dim: int) -> jnp.ndarray:
    """``(..., dim)`` sin/cos features of ``positions`` (any float array), periods 1 .. 10^4."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * freqs  # (..., half)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def position_embedding(t: int, h: int, w: int, width: int) -> jnp.ndarray:
    """``(t * h * w, width)``: a third of the channels for each of the frame, row and column."""
    third = 2 * (width // 6)  # even, so each axis gets whole sin/cos pairs
    tt, hh, ww = jnp.meshgrid(jnp.arange(t), jnp.arange(h), jnp.arange(w), indexing="ij")
    emb = [sincos_embedding(a.reshape(-1), third) for a in (tt, hh, ww)]
    emb = jnp.concatenate(emb, axis=-1)  # (N, 3 * third)
    return jnp.pad(emb, ((0, 0), (0, width - emb.shape[-1])))


def modulate(x: jnp.ndarray, shift: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
    """adaLN: ``x * (1 + scale) + shift`` with per-example ``(B, width)`` shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and MLP, each pre-normed, modulated and gated by the time embedding."""

    width: int
    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jnp.ndarray, cond: jnp.ndarray) -> jnp.ndarray:
        # (B, N, width), (B, width) -> (B, N, width)
        mod = nn.Dense(6 * self.width, kernel_init=nn.initializers.zeros)(nn.silu(cond))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        norm = nn.LayerNorm(use_bias=False, use_scale=False, dtype=jnp.float32)
        y = modulate(norm(x), shift1, scale1).astype(self.dtype)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(y)
        x = x + gate1[:, None] * y
        y = modulate(norm(x), shift2, scale2).astype(self.dtype)
        y = nn.Dense(int(self.width * self.mlp_ratio), dtype=self.dtype)(y)
        y = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(y))
        return x + gate2[:, None] * y


class VideoDiT(nn.Module):
    """``(latents (B, t, h, w, C), time (B,) in [0, 1]) -> velocity (B, t, h, w, C)``, float32.

    ``h`` and ``w`` must be multiples of ``patch_size``; ``t`` is free (every latent frame is
    its own row of tokens).
    """

    latent_dim: int
    patch_size: int = 2
    width: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, time: jnp.ndarray) -> jnp.ndarray:
        b, t, h, w, c = x.shape
        p = self.patch_size
        if h % p or w % p or c != self.latent_dim:
            raise ValueError(
                f"latents (B, t, h, w, {self.latent_dim}) need h, w divisible by patch_size "
                f"{p}; got {x.shape}"
            )
        x = x.reshape(b, t, h // p, p, w // p, p, c)  # (B, t, h/p, p, w/p, p, C)
        x = x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t * (h // p) * (w // p), p * p * c)
        x = nn.Dense(self.width)(x) + position_embedding(t, h // p, w // p, self.width)
        # The time step, scaled to [0, 1000] as DiT's integer steps, through an MLP.
        cond = sincos_embedding(time * 1000.0, 256)  # (B, 256)
        cond = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(cond)))  # (B, width)
        for _ in range(self.depth):
            x = DiTBlock(self.width, self.num_heads, self.mlp_ratio, self.dtype)(x, cond)
        shift, scale = jnp.split(
            nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros)(nn.silu(cond)), 2, -1
        )
        x = modulate(nn.LayerNorm(use_bias=False, use_scale=False)(x), shift, scale)
        x = nn.Dense(p * p * c, kernel_init=nn.initializers.zeros)(x)  # (B, N, p*p*C)
        x = x.reshape(b, t, h // p, w // p, p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, t, h, w, c).astype(jnp.float32)


def build_model(config, latent_dim: int) -> VideoDiT:
    """The :class:`VideoDiT` of a ``config.model`` section (see ``config.py``)."""
    m = config.model
    return VideoDiT(
        latent_dim=latent_dim,
        patch_size=m.patch_size,
        width=m.width,
        depth=m.depth,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        dtype=jnp.dtype(m.dtype),
    )


def init_params(model: VideoDiT, latent_shape: tuple[int, ...], seed: int) -> dict:
    """Float32 parameters for latents of ``latent_shape`` ``(t, h, w, C)``."""
    x = jnp.zeros((1, *latent_shape), jnp.float32)
    return model.init(jax.random.key(seed), x, jnp.zeros((1,), jnp.float32))["params"]
