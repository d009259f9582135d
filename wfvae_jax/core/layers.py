"""WF-VAE building blocks in Flax Linen, channels-last ``(B, T, H, W, C)``.

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
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Cache = Any
Dtype = Any


def swish(x: jnp.ndarray) -> jnp.ndarray:
    """``x * sigmoid(x)``: the reference's ``nonlinearity``."""
    return x * jax.nn.sigmoid(x)


def _torch_uniform(fan_in: int):
    """PyTorch's default conv init (kaiming_uniform with a=sqrt(5) == U(-1/sqrt(fan_in), ..))."""
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _pad_pairs(padding):
    """Per spatial dim: ``p`` -> ``(p, p)``; a ``(lo, hi)`` pair passes through."""
    return tuple(tuple(p) if isinstance(p, Sequence) else (p, p) for p in padding)


def _conv(x, kernel, strides, padding, dtype):
    nd = kernel.ndim - 2
    spatial = "DHW"[-nd:]
    dn = lax.conv_dimension_numbers(
        x.shape, kernel.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    )
    return lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=tuple(strides),
        padding=_pad_pairs(padding),
        dimension_numbers=dn,
    )


def _time_out(t: int, kt: int, st: int) -> int:
    """Output frames of a time-unpadded conv: ``T' = (T - k_t) // s_t + 1``."""
    return (t - kt) // st + 1


def _tap_input(x: jnp.ndarray, i: Any, st: int, t_out: int) -> jnp.ndarray:
    """Frames ``i, i + st, ..`` (``t_out`` of them) of ``(B, T, ...)``, as ``(B*t_out, ...)``."""
    span = st * (t_out - 1) + 1
    xi = lax.dynamic_slice_in_dim(x, i, span, axis=1)[:, ::st]
    return xi.reshape(x.shape[0] * t_out, *x.shape[2:])


def _time_taps_unrolled(x, kernel, st, strides, padding, dtype):
    """``sum_i conv2d(frames i, i+st, .. of x, kernel[i])`` as ``k_t`` unrolled convolutions."""
    kt = kernel.shape[0]
    t_out = _time_out(x.shape[1], kt, st)
    y = None
    for i in range(kt):
        yi = _conv(_tap_input(x, i, st, t_out), kernel[i], strides, padding, dtype)
        y = yi if y is None else y + yi
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _time_taps(x, kernel, st, strides, padding, dtype):
    """:func:`_time_taps_unrolled` as a loop over the taps: ``(B, T, H, W, Cin)`` with
    ``(k_t, kh, kw, Cin, Cout)`` -> ``(B*T', H', W', Cout)``, the same sums in the same order.

    Why a loop: unrolled, XLA fuses the taps' sum into each of its consumers (a norm's
    reductions, a residual add), so all ``k_t`` conv outputs stay live until the last consumer,
    and in the Causal Cache scan it copies every kernel's tap slices at the start of each step.
    The loop's carry is the running sum, materialized: one tap output is live at a time, and
    taps ``1..k_t-1`` of the kernel are sliced inside the loop, where they are used. WF-VAE-S
    33x256^2, XLA:CPU's plan: decode direct 1,956 -> 1,400 MiB, decode ``t_chunk=2``
    1,251 -> 898 MiB, encode direct 623 -> 570 MiB (``docs/performance.md``).
    The backward pass is the unrolled form's (its residuals are only ``x`` and ``kernel``; a
    differentiated loop would save every tap's input slice).
    """
    t_out = _time_out(x.shape[1], kernel.shape[0], st)

    def tap(i):
        ki = lax.dynamic_index_in_dim(kernel, i, 0, keepdims=False)
        return _conv(_tap_input(x, i, st, t_out), ki, strides, padding, dtype)

    return lax.fori_loop(1, kernel.shape[0], lambda i, acc: acc + tap(i), tap(0))


def _time_taps_fwd(x, kernel, st, strides, padding, dtype):
    return _time_taps(x, kernel, st, strides, padding, dtype), (x, kernel)


def _time_taps_bwd(st, strides, padding, dtype, res, g):
    x, kernel = res
    _, vjp = jax.vjp(lambda x, k: _time_taps_unrolled(x, k, st, strides, padding, dtype), x, kernel)
    return vjp(g)


_time_taps.defvjp(_time_taps_fwd, _time_taps_bwd)


def conv_nd(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    bias: jnp.ndarray | None,
    strides: Sequence[int],
    padding: Sequence[int | tuple[int, int]],
    dtype: Dtype,
) -> jnp.ndarray:
    """N-d cross-correlation of ``(N, *spatial, Cin)`` with ``(*k, Cin, Cout)``, zero padding.

    ``padding`` per spatial dim: ``p`` on both sides or ``(lo, hi)``.

    A 3D kernel without time padding runs as ``k_t`` 2D convolutions over time-shifted frames
    folded into the batch, summed in a loop (:func:`_time_taps`): the same function, 1.3-3.6x
    faster than XLA:CPU's conv3d at WF-VAE's shapes (``shared/notes/cpu-performance.md``).
    """
    if kernel.ndim == 5 and padding[0] == 0:
        b, t = x.shape[:2]
        kt, st = kernel.shape[0], strides[0]
        t_out = _time_out(t, kt, st)
        sp_strides, sp_padding = tuple(strides[1:]), _pad_pairs(padding[1:])
        if kt == 1:  # a reshape is a bitcast; kernel[0] would be a copy in XLA
            xi = _tap_input(x, 0, st, t_out)
            y = _conv(xi, kernel.reshape(kernel.shape[1:]), sp_strides, sp_padding, dtype)
        else:
            y = _time_taps(x, kernel, st, sp_strides, sp_padding, dtype)
        y = y.reshape(b, t_out, *y.shape[1:])
    else:
        y = _conv(x, kernel, strides, padding, dtype)
    return y if bias is None else y + bias.astype(dtype)


class ConvND(nn.Module):
    """Plain N-d convolution holding ``kernel`` ``(*k, Cin, Cout)`` and ``bias`` ``(Cout,)``.

    Input ``(N, *spatial, Cin)``; zero ``padding`` per spatial dim (``p`` or ``(lo, hi)``).
    Computes in ``dtype`` (parameters are stored in float32 and cast). Init follows PyTorch's
    conv default.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Sequence[int | tuple[int, int]] | None = None
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        nd = len(self.kernel_size)
        cin = x.shape[-1]
        fan_in = cin * math.prod(self.kernel_size)
        init = _torch_uniform(fan_in)
        kernel = self.param("kernel", init, (*self.kernel_size, cin, self.features))
        bias = self.param("bias", init, (self.features,)) if self.use_bias else None
        return conv_nd(
            x, kernel, bias, self.strides or (1,) * nd, self.padding or (0,) * nd, self.dtype
        )


def _conv2d_params(
    mod: nn.Module, features: int, k: int, cin: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``kernel`` ``(k, k, Cin, Cout)`` and ``bias`` ``(Cout,)`` on ``mod``, PyTorch's init."""
    init = _torch_uniform(cin * k * k)
    return mod.param("kernel", init, (k, k, cin, features)), mod.param("bias", init, (features,))


class Conv2d(nn.Module):
    """Per-frame 2D convolution of a video (the reference's ``Conv2d`` with ``video_to_image``).

    ``(B, T, H, W, Cin)`` -> ``(B, T, H', W', Cout)``; also accepts ``(N, H, W, Cin)``.
    Parameters sit directly on this module, as on a ``torch.nn.Conv2d``. ``padding``: ``p`` on
    every side, or ``(lo, hi)`` for both H and W.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int | tuple[int, int] = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel, bias = _conv2d_params(self, self.features, self.kernel_size, x.shape[-1])
        lead = x.shape[:-3]
        y = conv_nd(
            x.reshape(-1, *x.shape[-3:]),
            kernel,
            bias,
            (self.stride,) * 2,
            (self.padding,) * 2,
            self.dtype,
        )
        return y.reshape(*lead, *y.shape[1:])


class CausalConv3d(nn.Module):
    """Causal 3D convolution: ``k_t - 1`` replicas of the first frame in time, zero pad in space.

    ``(B, T, H, W, Cin)`` -> ``(B, T', H', W', Cout)``, ``T' = (T - 1) // s_t + 1`` in direct
    inference. Cache (Causal Cache, paper Eq. 4): the last ``k_t - s_t`` frames of the time-padded
    input, excluding ``lookahead`` trailing frames, so the next chunk's windows start where this
    one's stopped; a chunk's frame count must be a multiple of ``s_t``. ``k_t == 1`` needs none.
    ``padding`` (space only): ``p`` on every side, or ``(lo, hi)`` for both H and W.
    Source: reference ``CausalConv3d`` (``causalvideovae/model/modules/conv.py``).
    """

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: int | tuple[int, int] = 0
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    def _k(self) -> tuple[int, int, int]:
        k = self.kernel_size
        return tuple(k) if isinstance(k, Sequence) else (k, k, k)

    def _s(self) -> tuple[int, int, int]:
        s = self.stride
        return tuple(s) if isinstance(s, Sequence) else (s, s, s)

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, cache: Cache = None, lookahead: int = 0
    ) -> tuple[jnp.ndarray, Cache]:
        kt, st = self._k()[0], self._s()[0]
        if kt > 1:
            pad = jnp.repeat(x[:, :1], kt - 1, axis=1) if cache is None else cache.astype(x.dtype)
            x = jnp.concatenate([pad, x], axis=1)
        n_cache = kt - st
        new_cache = None
        if n_cache > 0:
            end = x.shape[1] - lookahead
            new_cache = x[:, end - n_cache : end]
        conv = ConvND(
            self.features,
            self._k(),
            self._s(),
            (0, self.padding, self.padding),
            use_bias=self.use_bias,
            dtype=self.dtype,
            name="conv",
        )
        return conv(x), new_cache


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


def _nearest_taps(k: jnp.ndarray, axis: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """A 3-tap kernel axis seen through 2x nearest upsampling: ``(even, odd)`` 2-tap kernels.

    Output ``2i`` of the 3-tap conv reads upsampled samples ``2i-1, 2i, 2i+1`` = source
    ``i-1, i, i``: taps ``(w0, w1 + w2)`` over ``(i-1, i)``; output ``2i+1`` reads source
    ``i, i, i+1``: taps ``(w0 + w1, w2)`` over ``(i, i+1)``. Zero padding carries over as is.
    """
    w0, w1, w2 = (lax.index_in_dim(k, i, axis) for i in range(3))
    return jnp.concatenate([w0, w1 + w2], axis), jnp.concatenate([w0 + w1, w2], axis)


def upsample2x_nearest_conv3x3(
    x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray, dtype: Dtype
) -> jnp.ndarray:
    """``conv3x3(nearest_upsample_2x(x))`` (padding 1) computed at the input resolution.

    ``(N, H, W, Cin)``, kernel ``(3, 3, Cin, Cout)`` -> ``(N, 2H, 2W, Cout)``. Each of the four
    output phases ``(a, b)`` (row/column parity) is a 2x2 conv of ``x`` with summed taps
    (:func:`_nearest_taps`), so the 4x-larger upsampled input is never built and the conv does
    4/9 of the multiply-adds. The same function up to float reassociation of the summed taps.
    """
    n, h, w, _ = x.shape
    pads = ((1, 0), (0, 1))  # phase 0 reads (i-1, i), phase 1 reads (i, i+1)
    rows = []
    for a, ka in enumerate(_nearest_taps(kernel, 0)):  # ka (2, 3, Cin, Cout)
        cols = [
            conv_nd(x, kab, None, (1, 1), (pads[a], pads[b]), dtype)  # (N, H, W, Cout)
            for b, kab in enumerate(_nearest_taps(ka, 1))  # kab (2, 2, Cin, Cout)
        ]
        rows.append(jnp.stack(cols, axis=3).reshape(n, h, 2 * w, -1))  # (N, H, 2W, Cout)
    y = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, -1)  # (N, 2H, 2W, Cout)
    return y + bias.astype(dtype)


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
        kernel, bias = _ConvParams(self.out_channels, 3, name="conv")(x.shape[-1])
        lead = x.shape[:-3]
        y = upsample2x_nearest_conv3x3(x.reshape(-1, *x.shape[-3:]), kernel, bias, self.dtype)
        return y.reshape(*lead, *y.shape[1:])


class _ConvParams(nn.Module):
    """The ``kernel`` ``(k, k, Cin, Cout)`` and ``bias`` of a :class:`Conv2d`, same init."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, cin: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        return _conv2d_params(self, self.features, self.kernel_size, cin)


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
