"""LC-VAE model option: same parameters as WF-VAE, compression applied between encode and decode."""

import jax
import numpy as np

import wfvae_jax
from wfvae_jax import lc
from wfvae_jax.lc import LCVAE


def test_lcvae_forward_equals_encode_compress_decode(tiny):
    # The tiny reference checkpoint on its 33-frame clip: encode/decode of this shape are the
    # programs other tests compile (the session shares them).
    params, cfg, vec = tiny
    x = np.moveaxis(vec["long/x"], 1, -1)
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
