"""WF-VAE encoder and decoder with the wavelet energy-flow pathway (Flax Linen, channels-last).

Source: reference ``causalvideovae/model/vae/modeling_wfvae.py`` (``Encoder``, ``Decoder``,
``WFVAEModel``); paper Sec. 3.2, Eqs. 2-3 (arXiv 2411.17459).

Shapes for a video ``(B, T, H, W, 3)``, ``T = 1 + d k`` with ``d = config.temporal_downsample``
(4, or 8 for the 8x8x8 variant), ``b = base_channels``, ``E`` the energy-flow width,
``L = latent_dim``; ``T2 = 1 + (d/2) k`` frames after the input Haar, ``T1 = 1 + 2k`` after
level 1 (= ``T2`` when ``d = 4``) and ``Tl = 1 + k`` latent frames; ``C1`` = 12 (2D Haar, d = 4)
or 24 (3D Haar, d = 8):
  encoder: Haar3D -> (B, T2, H/2, W/2, 24) -> down1 -> (B, T1, H/4, W/4, b) | W2 inflow
           -> down2 -> (B, Tl, H/8, W/8, 2b) | W3 inflow -> mid -> (B, Tl, H/8, W/8, 2L)
  decoder: the mirror; the energy-flow outflows are inverse wavelets added into the next level.
The 8x variant is the reference's (Open-Sora Plan v1.5's WF-VAE-M), not in the paper: level 1's
downsampler/upsampler halve/double time too and its energy flow is a 3D Haar of LLL (``C1`` 24).
Every module returns its Causal Cache (see ``wfvae_jax.core.layers``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from wfvae_jax.core import compile_options, wavelets
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.core.conv import CausalConv3d, Conv2d
from wfvae_jax.core.layers import (
    AttnBlock3DFix,
    Downsample,
    Norm,
    ResnetBlock2D,
    ResnetBlock3D,
    Spatial2xTime2x3DDownsample,
    Spatial2xTime2x3DUpsample,
    Upsample,
    swish,
)
from wfvae_jax.core.posterior import DiagonalGaussian

Cache = Any
SCALE3D = wavelets.REFERENCE_SCALE_3D


def _get(cache: Cache, name: str) -> Cache:
    return None if cache is None else cache[name]


class Encoder(nn.Module):
    """``(B, T, H, W, 3)`` -> moments ``(B, Tl, H/8, W/8, 2L)``, taps ``(W2, W3)``, cache.

    ``W2`` (``l1_coeffs``): Haar of the LLL subband, ``(B, T1, H/4, W/4, C1)`` (2D, or 3D in the
    8x variant); ``W3`` (``l2_coeffs``): 3D Haar of its LL(L) subband,
    ``(B, Tl, H/8, W/8, 24)``. In chunked inference ``cache=None`` marks the first chunk (one
    frame); later chunks hold a multiple of ``temporal_downsample`` frames.
    Source: reference ``Encoder`` (``modeling_wfvae.py``).
    """

    config: WFVAEConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c, b, dt = self.config, self.config.base_channels, self.dtype
        e, nt = c.encoder_energy_flow_hidden_size, c.norm_type
        n = c.encoder_num_resblocks
        self.time_l1 = c.temporal_downsample == 8  # level 1 halves time too (8x variant)
        # Lists mirror the reference's nn.Sequential indices: down1_0 <-> down1.0, etc.
        down = Spatial2xTime2x3DDownsample if self.time_l1 else Downsample
        self.down1 = (
            [Conv2d(b, dtype=dt)]
            + [ResnetBlock2D(b, b, nt, c.dropout, dtype=dt) for _ in range(n)]
            + [down(b, dtype=dt)]
        )
        self.down2 = (
            [Conv2d(2 * b, dtype=dt)]
            + [ResnetBlock3D(2 * b, 2 * b, nt, c.dropout, dtype=dt) for _ in range(n)]
            + [Spatial2xTime2x3DDownsample(2 * b, dtype=dt)]
        )
        self.connect_l1 = Conv2d(e, dtype=dt)
        self.connect_l2 = Conv2d(e, dtype=dt)
        mid = [
            ResnetBlock3D(2 * b + e, 4 * b, nt, c.dropout, dtype=dt),
            ResnetBlock3D(4 * b, 4 * b, nt, c.dropout, dtype=dt),
        ]
        if c.use_attention:
            mid.insert(1, AttnBlock3DFix(4 * b, nt, dtype=dt))
        self.mid = mid
        self.norm_out = Norm(nt, dtype=dt)
        self.conv_out = CausalConv3d(2 * c.latent_dim, 3, padding=1, dtype=dt)

    def __call__(
        self, x: jnp.ndarray, cache: Cache = None, deterministic: bool = True
    ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray], Cache]:
        first = cache is None
        new: dict[str, Cache] = {}
        coeffs = wavelets.haar3d(x.astype(self.dtype), SCALE3D, causal=first)  # (B,T2,H/2,W/2,24)
        if self.time_l1:
            l1_coeffs = wavelets.haar3d(coeffs[..., :3], SCALE3D, causal=first)  # (B,T1,H/4,W/4,24)
        else:
            l1_coeffs = wavelets.haar2d(coeffs[..., :3])  # LLL -> (B, T1, H/4, W/4, 12)
        l1 = self.connect_l1(l1_coeffs)  # (B, T1, H/4, W/4, E)
        l2_coeffs = wavelets.haar3d(l1_coeffs[..., :3], SCALE3D, causal=first)  # (B,Tl,H/8,W/8,24)
        l2 = self.connect_l2(l2_coeffs)  # (B, Tl, H/8, W/8, E)

        h = self.down1[0](coeffs)
        for blk in self.down1[1:-1]:
            h = blk(h, deterministic)
        if self.time_l1:
            h, new["down1_down"] = self.down1[-1](h, _get(cache, "down1_down"))
        else:
            h = self.down1[-1](h)  # (B, T1, H/4, W/4, b)
        h = jnp.concatenate([h, l1], axis=-1)  # W2 inflow (paper Eq. 2)
        h = self.down2[0](h)
        for i, blk in enumerate(self.down2[1:-1], 1):
            h, new[f"down2_{i}"] = blk(h, _get(cache, f"down2_{i}"), 0, deterministic)
        h, new["down2_down"] = self.down2[-1](h, _get(cache, "down2_down"))  # (B,Tl,H/8,W/8,2b)
        h = jnp.concatenate([h, l2], axis=-1)  # W3 inflow
        h = self._mid(h, cache, new, deterministic)  # (B, Tl, H/8, W/8, 4b)
        h = swish(self.norm_out(h))
        h, new["conv_out"] = self.conv_out(h, _get(cache, "conv_out"))
        return h, (l1_coeffs, l2_coeffs), new

    def _mid(self, h, cache, new, deterministic):
        for i, blk in enumerate(self.mid):
            if isinstance(blk, AttnBlock3DFix):
                h = blk(h)
            else:
                h, new[f"mid_{i}"] = blk(h, _get(cache, f"mid_{i}"), 0, deterministic)
        return h


class Decoder(nn.Module):
    """Latent ``(B, t, h, w, L)`` -> video ``(B, d(t-1)+1, 8h, 8w, 3)``, taps ``(W2^, W3^)``, cache.

    ``d = config.temporal_downsample``. Chunked inference: ``cache=None`` marks the first chunk;
    ``lookahead`` (0 or 1) trailing latent frames of ``z`` belong to the *next* chunk, read only
    by the time upsamplers' interpolation: a chunk of ``m`` own (+ lookahead) latent frames
    produces ``d m`` video frames (``1 + d (m - 1)`` for the first chunk, whose frame 0 is kept
    apart) and no more. The latent-rate layers (``conv_in``, ``mid``, ``connect_l2``, up2's blocks
    before its upsampler) run every frame of ``z`` once: the lookahead frame's outputs there are
    carried in the cache (``"lookahead"``) and prepended in the next call, whose ``z`` starts
    after that frame (it may be empty: a last chunk made of the carried frame only). From up2's
    upsampler on, the lookahead is dropped: up2's upsampler drops the frames interpolated from
    it, keeping one in the 8x variant for up1's upsampler, which drops it. (The reference
    instead recomputes the lookahead in the next chunk and carries it to the output, doubling it
    at each upsampler: its cache offsets 1, 2, 4.) ``W2^`` is returned after the W3 outflow has
    been added into its LL(L) subband, as the reference's in-place update does; ``W3^`` holds
    the carried frame and ``z``'s frames, lookahead included.
    Source: reference ``Decoder`` and ``WFVAEModel._set_cache_offset`` (``modeling_wfvae.py``).
    """

    config: WFVAEConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c, b, dt = self.config, self.config.base_channels, self.dtype
        e, nt, n, drop = (
            c.decoder_energy_flow_hidden_size,
            c.norm_type,
            c.decoder_num_resblocks,
            c.dropout,
        )
        self.conv_in = CausalConv3d(4 * b, 3, padding=1, dtype=dt)
        mid = [
            ResnetBlock3D(4 * b, 4 * b, nt, drop, dtype=dt),
            ResnetBlock3D(4 * b, 4 * b + e, nt, drop, dtype=dt),
        ]
        if c.use_attention:
            mid.insert(1, AttnBlock3DFix(4 * b, nt, dtype=dt))
        self.mid = mid
        self.up2 = (
            [ResnetBlock3D(4 * b, 4 * b, nt, drop, dtype=dt) for _ in range(n)]
            + [Spatial2xTime2x3DUpsample(4 * b, c.t_interpolation, dtype=dt)]
            + [ResnetBlock3D(4 * b, 4 * b + e, nt, drop, dtype=dt)]
        )
        self.time_l1 = c.temporal_downsample == 8  # level 1 doubles time too (8x variant)
        up1_up = (
            Spatial2xTime2x3DUpsample(2 * b, c.t_interpolation, dtype=dt)
            if self.time_l1
            else Upsample(2 * b, dtype=dt)
        )
        self.up1 = (
            [ResnetBlock3D(4 * b if i == 0 else 2 * b, 2 * b, nt, drop, dtype=dt) for i in range(n)]
            + [up1_up]
            + [ResnetBlock3D(2 * b, 2 * b, nt, drop, dtype=dt)]
        )
        self.layer = [
            ResnetBlock3D(2 * b if i == 0 else b, b, nt, drop, dtype=dt) for i in range(2)
        ]
        r = c.connect_res_layer_num
        self.connect_l1 = [ResnetBlock3D(e, e, nt, drop, dtype=dt) for _ in range(r)] + [
            Conv2d(24 if self.time_l1 else 12, dtype=dt)
        ]
        self.connect_l2 = [ResnetBlock3D(e, e, nt, drop, dtype=dt) for _ in range(r)] + [
            Conv2d(24, dtype=dt)
        ]
        self.norm_out = Norm(nt, dtype=dt)
        self.conv_out = Conv2d(24, dtype=dt)

    def __call__(
        self, z: jnp.ndarray, cache: Cache = None, lookahead: int = 0, deterministic: bool = True
    ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray], Cache]:
        first = cache is None
        e = self.config.decoder_energy_flow_hidden_size
        n_pre = len(self.up2) - 2  # up2's blocks before its time upsampler run at latent rate
        new: dict[str, Cache] = {}

        def run3d(blocks, name, h, la, keep=0, start=0):
            for i, blk in enumerate(blocks, start):
                key = f"{name}_{i}"
                if isinstance(blk, ResnetBlock3D):
                    h, new[key] = blk(h, _get(cache, key), la, deterministic)
                elif isinstance(blk, AttnBlock3DFix):
                    h = blk(h)
                elif isinstance(blk, Spatial2xTime2x3DUpsample):
                    h, new[key] = blk(h, _get(cache, key), la, keep)
                    la = keep  # the lookahead's other interpolated frames are dropped
                else:
                    h = blk(h)
            return h, la

        # Latent rate: every latent frame runs once, so these caches hold all of z; a chunk's
        # lookahead frame ran here in the previous step and is prepended from the cache.
        if z.shape[1]:
            h, new["conv_in"] = self.conv_in(z.astype(self.dtype), _get(cache, "conv_in"))
            h, _ = run3d(self.mid, "mid", h, 0)  # (B, n, h, w, 4b + E)
            l2_coeffs, _ = run3d(self.connect_l2, "connect_l2", h[..., -e:], 0)  # (.., 24)
            h, _ = run3d(self.up2[:n_pre], "up2", h[..., :-e], 0)  # (B, n, h, w, 4b)
        elif first:
            raise ValueError("the first decoder chunk needs at least one latent frame")
        else:  # a last chunk whose only frame is the previous chunk's lookahead
            h = l2_coeffs = None
            new.update({k: v for k, v in cache.items() if k != "lookahead"})
        if not first and "lookahead" in cache:
            h0, l2_0 = cache["lookahead"]
            h = h0 if h is None else jnp.concatenate([h0.astype(h.dtype), h], 1)  # (B, t, ..)
            l2_coeffs = l2_0 if l2_coeffs is None else jnp.concatenate([l2_0, l2_coeffs], 1)
        if lookahead:
            new["lookahead"] = (h[:, -lookahead:], l2_coeffs[:, -lookahead:])
        l2 = wavelets.inverse_haar3d(l2_coeffs, SCALE3D, causal=first)  # (B, t2, 2h, 2w, 3)
        # Only up1's upsampler (8x) needs a frame of lookahead after up2's; after the last time
        # upsampler no frame of the lookahead remains, so the rest of the decoder runs on the
        # chunk's own frames. The outflows are cut to the frames kept.
        # Frame counts: t2 = 2t - 1 after up2; t1 = t2 (4x) or 2 t2 - 1 (8x) after up1.
        keep2 = 1 if self.time_l1 and lookahead else 0
        h, la2 = run3d(self.up2[n_pre:], "up2", h, lookahead, keep2, n_pre)  # (B, t2, 2h, 2w, 4b+E)
        l1_coeffs, _ = run3d(self.connect_l1, "connect_l1", h[..., -e:], la2)  # (.., 12 | 24)
        l2 = l2[:, : l1_coeffs.shape[1]]  # the frames up2 kept
        l1_coeffs = l1_coeffs.at[..., :3].add(l2)  # W3 outflow into the LL band (paper Eq. 3)
        if self.time_l1:
            l1 = wavelets.inverse_haar3d(l1_coeffs, SCALE3D, causal=first)  # (B, t1, 4h, 4w, 3)
        else:
            l1 = wavelets.inverse_haar2d(l1_coeffs)  # (B, t1, 4h, 4w, 3)
        h, la1 = run3d(self.up1, "up1", h[..., :-e], la2)  # (B, t1, 4h, 4w, 2b)
        h, _ = run3d(self.layer, "layer", h, la1)  # (B, t1, 4h, 4w, b)
        h = self.conv_out(swish(self.norm_out(h)))  # (B, t1, 4h, 4w, 24)
        h = h.at[..., :3].add(l1[:, : h.shape[1]])  # W2 outflow into the LLL band
        dec = wavelets.inverse_haar3d(h, SCALE3D, causal=first)  # (B, d(t-1)+1, 8h, 8w, 3)
        return dec, (l1_coeffs, l2_coeffs), new


@flax.struct.dataclass
class ForwardOutput:
    """Autoencoder pass: reconstruction, posterior, and the WL-loss taps (channels-last): the
    encoder's ``W2``/``W3`` and the decoder's ``W2^``/``W3^`` (reference: enc_l1/l2, dec_l1/l2).
    """

    sample: jnp.ndarray
    posterior: DiagonalGaussian
    enc_w2: jnp.ndarray
    dec_w2: jnp.ndarray
    enc_w3: jnp.ndarray
    dec_w3: jnp.ndarray


class WFVAE(nn.Module):
    """The whole WF-VAE; parameters under ``encoder`` and ``decoder`` as the reference.

    ``__call__(x)`` is the training forward pass (reference ``WFVAEModel.forward``); use
    :meth:`encode` / :meth:`decode` through ``apply(..., method=...)`` for inference, or the
    functional API in ``wfvae_jax.inference.api``.
    """

    config: WFVAEConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.encoder = Encoder(self.config, self.dtype)
        self.decoder = Decoder(self.config, self.dtype)

    def encode(self, x: jnp.ndarray, cache: Cache = None, deterministic: bool = True):
        """``x`` (B, T, H, W, 3) -> (DiagonalGaussian, (W2, W3), cache)."""
        moments, taps, cache = self.encoder(x, cache, deterministic)
        return DiagonalGaussian.from_moments(moments), taps, cache

    def decode(
        self, z: jnp.ndarray, cache: Cache = None, lookahead: int = 0, deterministic: bool = True
    ):
        """``z`` (B, t, h, w, L) -> (video, (W2^, W3^), cache)."""
        return self.decoder(z, cache, lookahead, deterministic)

    def process_latent(self, z: jnp.ndarray) -> jnp.ndarray:
        """Hook between the posterior sample and the decoder: identity (LC-VAE compresses)."""
        return z

    def __call__(
        self, x: jnp.ndarray, sample_posterior: bool = True, deterministic: bool = True
    ) -> ForwardOutput:
        posterior, (enc_w2, enc_w3), _ = self.encode(x, None, deterministic)
        z = posterior.sample(self.make_rng("sample")) if sample_posterior else posterior.mode()
        z = self.process_latent(z)
        dec, (dec_w2, dec_w3), _ = self.decode(z, None, 0, deterministic)
        return ForwardOutput(dec, posterior, enc_w2, dec_w2, enc_w3, dec_w3)


def init_params(config: WFVAEConfig, rng: jax.Array, frames: int = 1, size: int = 8) -> Any:
    """Randomly initialised parameters (PyTorch's default conv init), as a params pytree."""
    return _jitted_init(config, frames, size)(rng)


@functools.lru_cache(maxsize=16)
def _jitted_init(config: WFVAEConfig, frames: int, size: int) -> Any:
    """The jitted init of one architecture, kept so another seed reuses its compilation."""

    def init(rng):
        x = jnp.zeros((1, frames, size, size, 3), jnp.float32)
        return WFVAE(config).init({"params": rng}, x, sample_posterior=False)["params"]

    # Jitted: an eager Flax init dispatches every op separately (over a minute for WF-VAE-S).
    # On CPU, LLVM -O2 instead of XLA's default -O3: the same bits, compiled ~4x faster (-O3
    # takes 40-60 s over the hundreds of inlined threefry hashes of a base-8 model, -O2 ~12 s).
    return compile_options.jit(init, cpu_extra={"xla_backend_optimization_level": 2})
