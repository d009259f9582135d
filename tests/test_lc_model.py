"""LC-VAE model option: same parameters as WF-VAE, compression applied between encode and decode."""

import jax
import numpy as np

import wfvae_jax
from wfvae_jax import lc
from wfvae_jax.lc import LCVAE
from wfvae_jax.model import WFVAE


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
    out = model.apply({"params": params}, x, sample_posterior=False)
    z = wfvae_jax.encode(params, x, cfg).mode()
    zc = lc.compress(z, lc.fixed_mask(cfg.latent_dim))
    assert not np.allclose(zc, z)  # the mask removes energy
    y = wfvae_jax.decode(params, zc, cfg)
    np.testing.assert_allclose(out.sample, y, atol=1e-5)
    plain = WFVAE(cfg).apply({"params": params}, x, sample_posterior=False)
    assert np.abs(plain.sample - out.sample).max() > 1e-4
    # KL is on the uncompressed posterior.
    np.testing.assert_allclose(out.posterior.mean, z, atol=1e-6)
