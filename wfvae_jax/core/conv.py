"""Convolutions of WF-VAE's layers, channels-last: the one place that calls ``lax.conv``.

Shapes (``k_t``/``s_t``: time kernel and stride; ``'``: after stride and padding)::

    conv_nd                      (N, *spatial, Cin) x (*k, Cin, Cout) -> (N, *spatial', Cout)
    ConvND                       conv_nd holding ``kernel`` (*k, Cin, Cout) and ``bias`` (Cout,)
    Conv2d                       (B, T, H, W, Cin) -> (B, T, H', W', Cout), frame by frame
    CausalConv3d                 (B, T, H, W, Cin) -> (B, (T - 1) // s_t + 1, H', W', Cout)
    upsample2x_nearest_conv3x3   (N, H, W, Cin) -> (N, 2H, 2W, Cout)

A 3D kernel without time padding runs as ``k_t`` 2D convolutions over time-shifted frames folded
into the batch (:func:`conv_nd`), summed in a loop; :class:`CausalConv3d` pads time causally or
from its Causal Cache (interface in :mod:`wfvae_jax.core.layers`). Parameters are stored in
float32 and cast to the compute dtype; initialisation follows PyTorch's conv default.

Source: reference ``causalvideovae/model/modules/{conv,updownsample}.py``
(PKU-YuanGroup/WF-VAE @ d858bee); parameter names mirror its state-dict keys.
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
    taps ``1..k_t-1`` of the kernel are sliced inside the loop, where they are used, so XLA's
    buffer plan is smaller for encode and decode, direct and chunked (``docs/performance.md``).
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
    folded into the batch, summed in a loop (:func:`_time_taps`): the same function, and faster
    than XLA:CPU's conv3d at WF-VAE's shapes (``docs/performance.md``).
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


def conv2d_params(
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
        kernel, bias = conv2d_params(self, self.features, self.kernel_size, x.shape[-1])
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


class ConvParams(nn.Module):
    """The ``kernel`` ``(k, k, Cin, Cout)`` and ``bias`` of a :class:`Conv2d`, same init."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, cin: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        return conv2d_params(self, self.features, self.kernel_size, cin)
