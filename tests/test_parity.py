"""The converted reference checkpoints reproduce every reference output tensor (float32).

Both shared tiny checkpoints: ``wfvae_tiny`` (4x temporal; cases T = 9, 33, 1) and
``wfvae_888_tiny`` (the 8x8x8 variant; cases T = 17, 41, 1).
"""

import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.core.model import WFVAE

TOL = 1e-4


def cl(a):
    return np.moveaxis(a, 1, -1)  # reference NCTHW -> our NTHWC


# The long clips (T = 33, 41) in the slow tier; test_causal_cache checks the 4x one chunked.
@pytest.mark.parametrize("case", ["short", pytest.param("long", marks=pytest.mark.slow), "image"])
def test_parity_with_reference(tiny_any, case):
    params, config, vec = tiny_any
    x = cl(vec[f"{case}/x"])
    post, (l1, l2) = wfvae_jax.encode(params, x, config, return_taps=True)
    got = {
        "moments": np.concatenate([post.mean, post.logvar], -1),
        "z": post.mode(),
        "enc_l1": l1,
        "enc_l2": l2,
    }
    y, (dl1, dl2) = wfvae_jax.decode(params, cl(vec[f"{case}/z"]), config, return_taps=True)
    got.update(y=y, dec_l1=dl1, dec_l2=dl2)
    for name, value in got.items():
        ref = cl(vec[f"{case}/{name}"])
        assert value.shape == ref.shape, name
        err = float(np.abs(np.asarray(value) - ref).max())
        assert err <= TOL, f"{case}/{name}: max abs error {err}"


def test_8x_shapes(tiny888):
    """The 8x variant's frame counts: T = 1 + 8k video frames <-> 1 + k latent frames."""
    _, config, vec = tiny888
    assert config.temporal_downsample == 8
    x, z, l1, l2 = (vec[f"long/{k}"] for k in ("x", "z", "enc_l1", "enc_l2"))
    assert x.shape[2] == 41 and z.shape[2] == config.latent_frames(41) == 6
    # W2 is a 3D Haar (24 channels) at T/4 frames, W3 at the latent rate.
    assert l1.shape[1:3] == (24, 11) and l2.shape[1:3] == (24, 6)


@pytest.mark.slow  # eager Flax: ~60 s of op-by-op dispatch per variant
@pytest.mark.parametrize("variant", ["4x", "8x"])
def test_forward_pass_matches_encode_then_decode(variant, tiny, tiny888):
    import jax

    params, config, vec = tiny if variant == "4x" else tiny888
    x = cl(vec["short/x"])
    out = WFVAE(config).apply({"params": params}, x, sample_posterior=False)
    np.testing.assert_allclose(out.sample, cl(vec["short/y"]), atol=TOL)
    np.testing.assert_allclose(out.dec_w3, cl(vec["short/dec_l2"]), atol=TOL)
    sampled = WFVAE(config).apply(
        {"params": params}, x, sample_posterior=True, rngs={"sample": jax.random.key(1)}
    )
    assert not np.allclose(sampled.sample, out.sample)


@pytest.mark.slow  # two more compiles (the bfloat16 encoder and decoder)
def test_bfloat16_close_to_float32(tiny):
    import jax.numpy as jnp

    params, config, vec = tiny
    x = cl(vec["short/x"])
    post = wfvae_jax.encode(params, x, config, dtype=jnp.bfloat16)
    assert post.mean.dtype == jnp.bfloat16
    ref = cl(vec["short/moments"])[..., : config.latent_dim]
    err = np.abs(np.asarray(post.mean, np.float32) - ref).max()
    assert err < 0.1 * np.abs(ref).max()
    y = wfvae_jax.decode(params, cl(vec["short/z"]), config, dtype=jnp.bfloat16)
    yref = cl(vec["short/y"])
    assert np.abs(np.asarray(y, np.float32) - yref).max() < 0.1 * np.abs(yref).max()
