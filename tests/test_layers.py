"""Layer formulations against their plain definitions (exact algebraic identities)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wfvae_jax.core import conv, layers


def _nearest_then_conv(x, kernel, bias):
    """The reference's Upsample: F.interpolate(nearest, 2x) then conv3x3 with padding 1."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    dn = lax.conv_dimension_numbers(up.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    y = lax.conv_general_dilated(
        up, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn, precision="highest"
    )
    return y + bias


@pytest.mark.parametrize("shape", [(2, 5, 7, 6, 4), (1, 1, 1, 3, 2), (3, 4, 4, 8, 16)])
def test_upsample_polyphase_equals_nearest_then_conv(shape):
    n, h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(cout), jnp.float32)
    with jax.default_matmul_precision("highest"):
        got = conv.upsample2x_nearest_conv3x3(x, kernel, bias, jnp.float32)
    want = _nearest_then_conv(x, kernel, bias)
    assert got.shape == (n, 2 * h, 2 * w, cout)
    # Only the summed taps' rounding differs: relative to the output's scale, ~1e-7.
    np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))


def test_upsample_module_keeps_conv_params():
    x = jnp.zeros((1, 2, 4, 4, 6))
    params = layers.Upsample(4).init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, params) == {"conv": {"bias": (4,), "kernel": (3, 3, 6, 4)}}
    y = layers.Upsample(4).apply({"params": params}, jnp.ones((1, 2, 4, 4, 6)))
    assert y.shape == (1, 2, 8, 8, 4)


def test_time_upsampler_rejects_keep_beyond_lookahead():
    m = layers.Spatial2xTime2x3DUpsample(8)
    x = jnp.zeros((1, 3, 4, 4, 8))
    with pytest.raises(ValueError, match="keep"):
        m.init(jax.random.key(0), x, None, 1, 3)


def _conv3d(x, kernel, strides):
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, ("NDHWC", "DHWIO", "NDHWC"))
    return lax.conv_general_dilated(
        x, kernel, strides, ((0, 0), (1, 1), (1, 1)), dimension_numbers=dn, precision="highest"
    )


@pytest.mark.parametrize("kt,st,t", [(3, 1, 7), (3, 2, 9), (2, 1, 5), (2, 2, 6), (1, 2, 5)])
def test_time_taps_equal_conv3d_value_and_gradients(kt, st, t):
    """conv_nd's 3D path (the k_t time taps summed in a loop, its own backward pass) is the
    3D convolution, value and both gradients."""
    rng = np.random.default_rng(kt * 10 + st)
    x = jnp.asarray(rng.normal(size=(2, t, 6, 5, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kt, 3, 3, 4, 8)), jnp.float32)
    strides = (st, 1, 2)
    with jax.default_matmul_precision("highest"):
        ours = lambda x, k: conv.conv_nd(x, k, None, strides, (0, 1, 1), jnp.float32)  # noqa: E731
        y = jax.jit(ours)(x, kernel)
        want = _conv3d(x, kernel, strides)
        assert y.shape == want.shape
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        ct = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
        g = jax.jit(jax.vjp(ours, x, kernel)[1])(ct)
        g_want = jax.vjp(lambda x, k: _conv3d(x, k, strides), x, kernel)[1](ct)
        for a, b in zip(g, g_want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
