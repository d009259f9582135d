"""LC-VAE model option: same parameters as WF-VAE, compression applied between encode and decode."""

import jax
import numpy as np

import wfvae_jax
from wfvae_jax import lc
from wfvae_jax.lc import LCVAE


def test_lcvae_forward_equals_encode_compress_decode():
    cfg = wfvae_jax.WFVAEConfig(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=8,
        norm_type="layernorm",
        t_interpolation="trilinear",
    )
    params = wfvae_jax.init_params(cfg, jax.random.key(0))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 33, 16, 16, 3)).astype(np.float32)
    model = LCVAE(cfg)
    # Same parameter tree as WF-VAE: checkpoints load unchanged.
    lc_params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), x, sample_posterior=False)["params"]
    )
    assert jax.tree.structure(lc_params) == jax.tree.structure(params)
    # Jitted: eager Flax dispatches (and compiles) every op on its own, ~500 compilations.
    out = jax.jit(lambda p: model.apply({"params": p}, x, sample_posterior=False))(params)
    z = wfvae_jax.encode(params, x, cfg).mode()
    zc = lc.compress(z, lc.fixed_mask(cfg.latent_dim))
    assert not np.allclose(zc, z)  # the mask removes energy
    y = wfvae_jax.decode(params, zc, cfg)
    np.testing.assert_allclose(out.sample, y, atol=1e-5)
    # WF-VAE's own forward pass is decode(encode(x).mode()) (test_parity's
    # test_forward_pass_matches_encode_then_decode checks it against the reference); this
    # reuses the decoder compiled above.
    plain = wfvae_jax.decode(params, z, cfg)
    assert np.abs(plain - out.sample).max() > 1e-4
    # KL is on the uncompressed posterior.
    np.testing.assert_allclose(out.posterior.mean, z, atol=1e-6)
