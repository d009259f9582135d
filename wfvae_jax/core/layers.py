"""WF-VAE building blocks in Flax Linen, channels-last ``(B, T, H, W, C)``.

Shapes (the convolutions inside are :mod:`wfvae_jax.core.conv`'s)::

    Norm                          (.., C) -> same (LayerNorm over C, or GroupNorm(32))
    ResnetBlock2D                 (B, T, H, W, Cin) -> (B, T, H, W, Cout), frame by frame
    ResnetBlock3D                 (B, T, H, W, Cin) -> (B, T, H, W, Cout), causal in time
    Downsample                    (.., H, W, C) -> (.., H/2, W/2, Cout), frame by frame
    Upsample                      (.., H, W, Cin) -> (.., 2H, 2W, Cout), frame by frame
    Spatial2xTime2x3DDownsample   (B, T, H, W, C) -> (B, (T - 1) // 2 + 1, H/2, W/2, Cout)
    Spatial2xTime2x3DUpsample     (B, T, H, W, C) -> (B, 2T - 1, 2H, 2W, Cout)
    AttnBlock3DFix                (B, T, H, W, C) -> same (per-frame spatial attention)

Source: reference ``causalvideovae/model/modules/{conv,normalize,resnet_block,updownsample,
attention}.py`` (PKU-YuanGroup/WF-VAE @ d858bee). Submodule and parameter names mirror the
reference's state-dict keys (``conv``, ``norm``, list index ``_i``) so conversion is a renaming.

Causal Cache interface. Every layer with temporal context is called as
``y, cache = layer(x, cache, lookahead)``:
- ``cache=None`` is direct inference, or the first chunk of chunked inference (the first frame
  alone): the layer pads causally as the reference does (first frame replicated).
- otherwise ``cache`` is what the layer returned for the previous chunk.
- ``lookahead`` (static int) is the number of trailing frames of ``x`` that belong to the *next*
  chunk (the decoder's trilinear time upsampling looks one latent frame ahead, so decoder chunks
  carry one extra latent frame whose outputs are discarded): they are excluded from the cache.
Layers without temporal context take and return ``None``. A layer always returns its cache; in
direct inference it is discarded and XLA removes the dead slices.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from wfvae_jax.core.conv import (
    Cache,
    CausalConv3d,
    Conv2d,
    ConvParams,
    Dtype,
    upsample2x_nearest_conv3x3,
)


def swish(x: jnp.ndarray) -> jnp.ndarray:
    """``x * sigmoid(x)``: the reference's ``nonlinearity``."""
    return x * jax.nn.sigmoid(x)


class Norm(nn.Module):
    """LayerNorm over channels or GroupNorm(32) as the reference's ``Normalize``; eps 1e-6.

    GroupNorm statistics span ``(C/32, *reduce_axes)``: all of (T, H, W) for 5D inputs as
    ``torch.nn.GroupNorm`` on ``(B, C, T, H, W)`` does (so it mixes frames), (H, W) for per-frame
    blocks. Statistics are computed in float32 whatever the compute dtype. LayerNorm's parameters
    live under ``norm`` like the reference's wrapper; GroupNorm's directly on the module.
    """

    norm_type: str
    per_frame: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = x.shape[-1]
        xf = x.astype(jnp.float32)
        if self.norm_type == "layernorm":
            holder = _Affine(name="norm")
            mean = xf.mean(-1, keepdims=True)
            var = jnp.square(xf - mean).mean(-1, keepdims=True)
            y = (xf - mean) * lax.rsqrt(var + 1e-6)
            return holder(y, c).astype(self.dtype)
        groups = 32
        if c % groups:
            raise ValueError(f"GroupNorm(32) needs channels divisible by 32, got {c}")
        g = xf.reshape(*x.shape[:-1], groups, c // groups)
        # Reduce over channels-in-group and the (T,) H, W axes of each sample (or frame).
        axes = tuple(range(x.ndim - 3 if self.per_frame else 1, x.ndim - 1)) + (x.ndim,)
        mean = g.mean(axes, keepdims=True)
        var = jnp.square(g - mean).mean(axes, keepdims=True)
        y = ((g - mean) * lax.rsqrt(var + 1e-6)).reshape(x.shape)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return (y * scale + bias).astype(self.dtype)


class _Affine(nn.Module):
    @nn.compact
    def __call__(self, y: jnp.ndarray, c: int) -> jnp.ndarray:
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return y * scale + bias


class ResnetBlock2D(nn.Module):
    """Per-frame residual block: norm, swish, conv3x3, norm, swish, dropout, conv3x3 (+1x1 skip).

    Source: reference ``ResnetBlock2D``. ``(B, T, H, W, Cin)`` -> ``(B, T, H, W, Cout)``.
    """

    in_channels: int
    out_channels: int
    norm_type: str
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        h = swish(Norm(self.norm_type, per_frame=True, dtype=self.dtype, name="norm1")(x))
        h = Conv2d(self.out_channels, dtype=self.dtype, name="conv1")(h)
        h = swish(Norm(self.norm_type, per_frame=True, dtype=self.dtype, name="norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = Conv2d(self.out_channels, dtype=self.dtype, name="conv2")(h)
        if self.in_channels != self.out_channels:
            x = Conv2d(self.out_channels, 1, 1, 0, dtype=self.dtype, name="nin_shortcut")(x)
        return x + h


class ResnetBlock3D(nn.Module):
    """Causal 3D residual block (two 3x3x3 causal convs, 1x1x1 causal skip when channels change).

    Source: reference ``ResnetBlock3D``. Cache: ``{"conv1", "conv2"}`` (2 frames each).
    """

    in_channels: int
    out_channels: int
    norm_type: str
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, cache: Cache = None, lookahead: int = 0, deterministic: bool = True
    ) -> tuple[jnp.ndarray, Cache]:
        c = cache or {}
        h = swish(Norm(self.norm_type, dtype=self.dtype, name="norm1")(x))
        h, c1 = CausalConv3d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv1")(
            h, c.get("conv1"), lookahead
        )
        h = swish(Norm(self.norm_type, dtype=self.dtype, name="norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h, c2 = CausalConv3d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv2")(
            h, c.get("conv2"), lookahead
        )
        if self.in_channels != self.out_channels:
            x, _ = CausalConv3d(self.out_channels, 1, dtype=self.dtype, name="nin_shortcut")(x)
        return x + h, {"conv1": c1, "conv2": c2}


class Downsample(nn.Module):
    """Per-frame 2x spatial downsampling: zero pad right/bottom by 1, conv3x3 stride 2.

    Source: reference ``Downsample``. ``(.., H, W, C)`` -> ``(.., H/2, W/2, Cout)``.
    """

    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # The pad goes to the conv, not jnp.pad: XLA:CPU's YNNPACK runs an unpadded stride-2
        # conv through a buffer ~3x its input and ~2x slower (docs/performance.md).
        return Conv2d(self.out_channels, 3, 2, (0, 1), dtype=self.dtype, name="conv")(x)


class Upsample(nn.Module):
    """Per-frame 2x nearest spatial upsampling then conv3x3. Source: reference ``Upsample``.

    ``(.., H, W, Cin)`` -> ``(.., 2H, 2W, Cout)``, computed without materialising the
    upsampled frames (:func:`upsample2x_nearest_conv3x3`). Parameters under ``conv`` as the
    reference's.
    """

    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel, bias = ConvParams(self.out_channels, 3, name="conv")(x.shape[-1])
        lead = x.shape[:-3]
        y = upsample2x_nearest_conv3x3(x.reshape(-1, *x.shape[-3:]), kernel, bias, self.dtype)
        return y.reshape(*lead, *y.shape[1:])


class Spatial2xTime2x3DDownsample(nn.Module):
    """2x space-time downsampling: zero pad right/bottom, causal conv 3x3x3 stride 2.

    ``(B, T, H, W, C)`` -> ``(B, (T-1)//2 + 1, H/2, W/2, Cout)``; cache 1 frame (k 3 - s 2).
    Source: reference ``Spatial2xTime2x3DDownsample``.
    """

    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, cache: Cache = None, lookahead: int = 0
    ) -> tuple[jnp.ndarray, Cache]:
        # The spatial pad goes to the conv (see Downsample).
        return CausalConv3d(self.out_channels, 3, 2, (0, 1), dtype=self.dtype, name="conv")(
            x, cache, lookahead
        )


def upsample2x_linear(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    """2x linear interpolation along ``axis`` with ``align_corners=False`` (PyTorch semantics).

    Output ``2i`` is ``0.75 x[i] + 0.25 x[i-1]``, output ``2i+1`` is ``0.75 x[i] + 0.25 x[i+1]``,
    with the edge sample repeated at the borders: exactly ``F.interpolate(scale_factor=2,
    mode='linear'|'bilinear'|'trilinear')`` along one axis.
    """
    n = x.shape[axis]
    # Shifted slices, not a gather: under spatial sharding XLA turns them into a one-row halo
    # exchange, where a gather (jnp.take) would all-gather the whole axis on every device.
    sl = functools.partial(lax.slice_in_dim, x, axis=axis)
    prev = jnp.concatenate([sl(0, 1), sl(0, n - 1)], axis=axis)  # x[max(i - 1, 0)]
    nxt = jnp.concatenate([sl(1, n), sl(n - 1, n)], axis=axis)  # x[min(i + 1, n - 1)]
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    y = jnp.stack([even, odd], axis=axis + 1 if axis >= 0 else axis)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return y.reshape(shape)


def _spatial_up(x: jnp.ndarray) -> jnp.ndarray:
    return upsample2x_linear(upsample2x_linear(x, 2), 3)


class Spatial2xTime2x3DUpsample(nn.Module):
    """2x space-time upsampling: the first frame kept apart, the rest interpolated 2x in time.

    Direct inference: frame 0 is upsampled in space only; frames 1.. are interpolated 2x in time
    (``t_interpolation``: trilinear = linear, align_corners False; or nearest) among themselves,
    then bilinear 2x in space; then a causal 3x3x3 conv. ``T`` frames -> ``2T - 1``.
    Linear time interpolation looks one frame ahead, hence the decoder's lookahead in chunks.
    The ``2 * lookahead`` output frames interpolated from the lookahead input frames are dropped
    before the spatial upsampling and the conv, except the first ``keep`` of them (``keep = 1``
    when a later time upsampler needs its own frame of lookahead, else 0): the layers after this
    one only run on frames that are kept. Returns ``(y, cache)`` with ``y`` ending in ``keep``
    lookahead frames.
    Cache: ``(frame, valid)``: the last input frame before the ``lookahead`` trailing frames, and
    whether one exists (after the single-frame first chunk there is none, and the next chunk's
    left edge repeats its own first frame exactly as direct inference treats frames 1..), plus
    the conv's cache (its input's lookahead is ``keep``). The reference's ``depth``
    instead fixes the lookahead at ``2**depth`` frames (cache slice ``x[-(2**depth) - 1]``):
    depth 0 for up2 and, in the 8x variant, depth 1 for up1, whose input is already 2x in time.
    Source: reference ``Spatial2xTime2x3DUpsample`` (its ``enable_cached`` path).
    """

    out_channels: int
    t_interpolation: str = "trilinear"
    dtype: Dtype = jnp.float32

    def _time_up(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.t_interpolation == "nearest":
            return jnp.repeat(x, 2, axis=1)
        return upsample2x_linear(x, 1)

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, cache: Cache = None, lookahead: int = 0, keep: int = 0
    ) -> tuple[jnp.ndarray, Cache]:
        if not 0 <= keep <= 2 * lookahead:
            raise ValueError(f"keep must be in [0, 2 * lookahead], got {keep} ({lookahead=})")
        drop = 2 * lookahead - keep  # trailing interpolated frames no later layer needs
        if cache is None:
            # Direct inference, or the first chunk.
            rest = x[:, 1:]
            if rest.shape[1] == 0:
                y = _spatial_up(x[:, :1])
            else:
                t = self._time_up(rest)  # (B, 2(T-1), h, w, C)
                t = t[:, : t.shape[1] - drop]
                y = jnp.concatenate([_spatial_up(x[:, :1]), _spatial_up(t)], 1)
            conv_cache = None
            valid = jnp.asarray(rest.shape[1] - lookahead > 0, x.dtype)
            last = x[:, max(x.shape[1] - lookahead - 1, 0)][:, None]
            frame = last * valid
        else:
            frame, valid, conv_cache = cache
            frame = frame.astype(x.dtype)
            left = jnp.where(valid > 0, frame, x[:, :1])
            t = self._time_up(jnp.concatenate([left, x], axis=1))  # (B, 2(T+1), h, w, C)
            y = _spatial_up(t[:, 2 : t.shape[1] - drop])  # (B, 2T - drop, 2h, 2w, C)
            frame = x[:, x.shape[1] - lookahead - 1][:, None]
            valid = jnp.ones((), x.dtype)
        y, conv_cache = CausalConv3d(
            self.out_channels, 3, padding=1, dtype=self.dtype, name="conv"
        )(y, conv_cache, keep)
        return y, (frame, valid, conv_cache)


class AttnBlock3DFix(nn.Module):
    """Per-frame spatial self-attention (single head, dim C) with residual.

    ``(B, T, H, W, C)`` -> same. q/k/v/proj_out are 1x1x1 causal convs (dense over C).
    Source: reference ``AttnBlock3DFix`` (``scaled_dot_product_attention`` over H*W per frame).
    """

    channels: int
    norm_type: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, t, h, w, c = x.shape
        hn = Norm(self.norm_type, dtype=self.dtype, name="norm")(x)
        q, _ = CausalConv3d(c, 1, dtype=self.dtype, name="q")(hn)
        k, _ = CausalConv3d(c, 1, dtype=self.dtype, name="k")(hn)
        v, _ = CausalConv3d(c, 1, dtype=self.dtype, name="v")(hn)
        q, k, v = (a.reshape(b * t, h * w, c) for a in (q, k, v))
        logits = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) * (c**-0.5)
        attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        o = jnp.einsum("nqk,nkc->nqc", attn, v).reshape(b, t, h, w, c)
        o, _ = CausalConv3d(c, 1, dtype=self.dtype, name="proj_out")(o)
        return x + o
