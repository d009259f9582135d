"""Layer formulations against their plain definitions (exact algebraic identities)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wfvae_jax import layers


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
        got = layers.upsample2x_nearest_conv3x3(x, kernel, bias, jnp.float32)
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
