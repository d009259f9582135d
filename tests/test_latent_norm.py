"""normalize_latents / denormalize_latents: the per-channel ``(z - shift) * scale`` convention,
its inverse, the length rules for scale/shift, and the SampleLatent transform that uses them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.data.latents import SampleLatent

C = 8
RNG = np.random.default_rng(0)
SCALE = tuple(float(v) for v in RNG.uniform(0.3, 3.0, C))
SHIFT = tuple(float(v) for v in RNG.normal(0.0, 2.0, C))


def _config(scale=SCALE, shift=SHIFT, latent_dim=C):
    return wfvae_jax.get_config("tiny").replace(latent_dim=latent_dim, scale=scale, shift=shift)


def _z(shape=(2, 3, 4, 5, C), dtype=np.float32):
    return np.random.default_rng(1).normal(1.0, 3.0, shape).astype(dtype)


def test_per_channel_against_a_loop_over_channels():
    z, cfg = _z(), _config()
    got = wfvae_jax.normalize_latents(z, cfg)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == z.shape
    for c in range(C):  # channel c uses entry c of each, in float64
        want = (z[..., c].astype(np.float64) - SHIFT[c]) * SCALE[c]
        np.testing.assert_allclose(got[..., c], want, rtol=1e-6, atol=1e-6)
    back = wfvae_jax.denormalize_latents(got, cfg)
    for c in range(C):
        want = got[..., c].astype(np.float64) / SCALE[c] + SHIFT[c]
        np.testing.assert_allclose(back[..., c], want, rtol=1e-6, atol=1e-6)


def test_round_trip():
    z = _z()
    # Powers of two and no shift: every operation is exact, so the round trip is the identity.
    exact = _config(scale=tuple(2.0 ** np.arange(-3, C - 3)), shift=(0.0,) * C)
    for x in (z, jnp.asarray(z)):
        n = wfvae_jax.normalize_latents(x, exact)
        assert np.array_equal(np.asarray(wfvae_jax.denormalize_latents(n, exact)), z)
    cfg = _config()
    back = wfvae_jax.denormalize_latents(wfvae_jax.normalize_latents(z, cfg), cfg)
    np.testing.assert_allclose(back, z, rtol=1e-6, atol=1e-5)
    z64 = z.astype(np.float64)  # float64 NumPy stays float64
    back = wfvae_jax.denormalize_latents(wfvae_jax.normalize_latents(z64, cfg), cfg)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, z64, rtol=1e-14, atol=1e-13)


def test_jax_arrays_jit_vmap_grad_and_bfloat16():
    z, cfg = _z(), _config()
    want = wfvae_jax.normalize_latents(z, cfg)
    eager = wfvae_jax.normalize_latents(jnp.asarray(z), cfg)
    assert isinstance(eager, jax.Array)
    np.testing.assert_allclose(eager, want, rtol=1e-6, atol=1e-6)
    jitted = jax.jit(lambda x: wfvae_jax.normalize_latents(x, cfg))(z)
    np.testing.assert_allclose(jitted, want, rtol=1e-6, atol=1e-6)
    mapped = jax.vmap(lambda x: wfvae_jax.normalize_latents(x, cfg))(jnp.asarray(z))
    np.testing.assert_allclose(mapped, want, rtol=1e-6, atol=1e-6)
    # d/dz of sum((z - shift) * scale) is scale, per channel.
    g = jax.grad(lambda x: wfvae_jax.normalize_latents(x, cfg).sum())(jnp.asarray(z))
    np.testing.assert_allclose(g, np.broadcast_to(np.float32(SCALE), z.shape), rtol=1e-7)
    zb = jnp.asarray(z, jnp.bfloat16)
    nb = wfvae_jax.normalize_latents(zb, cfg)
    assert nb.dtype == jnp.bfloat16
    ref = wfvae_jax.normalize_latents(np.asarray(zb, np.float32), cfg)
    np.testing.assert_allclose(np.asarray(nb, np.float32), ref, rtol=1e-2, atol=2e-2)


def test_length_one_broadcasts_to_every_channel():
    z = _z()
    one = wfvae_jax.normalize_latents(z, _config(scale=(0.5,), shift=(0.25,)))
    full = wfvae_jax.normalize_latents(z, _config(scale=(0.5,) * C, shift=(0.25,) * C))
    assert np.array_equal(one, full)
    np.testing.assert_array_equal(one, (z - np.float32(0.25)) * np.float32(0.5))


def test_placeholder_and_other_mismatches_name_latent_stats():
    placeholder = wfvae_jax.get_config("tiny")  # the reference's 4 entries for 8 channels
    assert len(placeholder.scale) == 4 and placeholder.latent_dim == 8
    for fn in (wfvae_jax.normalize_latents, wfvae_jax.denormalize_latents):
        with pytest.raises(ValueError, match=r"4 entries \(the reference's placeholder\)") as e:
            fn(_z(), placeholder)
        assert "wfvae latent-stats" in str(e.value) and "--write_config" in str(e.value)
    with pytest.raises(ValueError, match=r"config.shift has 3 entries but latent_dim is 8"):
        wfvae_jax.normalize_latents(_z(), _config(shift=(0.0,) * 3))
    with pytest.raises(ValueError, match="--write_config"):
        SampleLatent(placeholder)  # refused when the pipeline is built, not in a worker


def test_bad_values_and_shapes_are_errors_and_results_are_finite():
    z, cfg = _z(), _config()
    for fn in (wfvae_jax.normalize_latents, wfvae_jax.denormalize_latents):
        out = fn(z, cfg)
        assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="scale holds zeros"):
        wfvae_jax.denormalize_latents(z, _config(scale=(1.0,) * 7 + (0.0,)))
    with pytest.raises(ValueError, match="non-finite"):
        wfvae_jax.normalize_latents(z, _config(shift=(float("nan"),)))
    with pytest.raises(ValueError, match=r"channels-last \(\.\.\., 8\).*channels-first"):
        wfvae_jax.normalize_latents(np.moveaxis(z, -1, 1), cfg)
    with pytest.raises(ValueError, match="float array"):
        wfvae_jax.normalize_latents(z.astype(np.int32), cfg)


def test_sample_latent_normalises_with_the_function():
    cfg = _config()
    mean, logvar = _z((3, 4, 5, C)), np.full((3, 4, 5, C), -2.0, np.float32)
    item = {"mean": mean, "logvar": logvar, "video": "a.mp4", "start": 0}
    mode = SampleLatent(cfg, sample=False).random_map(item, np.random.default_rng(0))
    assert mode["latent"].dtype == np.float32 and mode["video"] == "a.mp4"
    assert np.array_equal(mode["latent"], wfvae_jax.normalize_latents(mean, cfg))
    drawn = SampleLatent(cfg).random_map(item, np.random.default_rng(0))
    eps = np.random.default_rng(0).standard_normal(mean.shape, dtype=np.float32)
    want = wfvae_jax.normalize_latents(mean + np.exp(-1.0, dtype=np.float32) * eps, cfg)
    np.testing.assert_allclose(drawn["latent"], want, rtol=1e-6, atol=1e-6)
