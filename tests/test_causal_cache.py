"""Causal Cache: chunked == direct, compile-once, and causality, on both paths."""

import jax
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax import causal_cache
from wfvae_jax.config import WFVAEConfig

TOL = 1e-5


def cl(a):
    return np.moveaxis(a, 1, -1)


def test_long_case_against_reference_outputs(tiny):
    params, config, vec = tiny
    x = cl(vec["long/x"])
    post = wfvae_jax.encode(params, x, config, t_chunk=8)
    ref = cl(vec["long/moments"])
    got = np.concatenate([post.mean, post.logvar], -1)
    assert np.abs(got - ref).max() <= 1e-4
    y = wfvae_jax.decode(params, cl(vec["long/z"]), config, t_chunk=2)
    assert np.abs(y - cl(vec["long/y"])).max() <= 1e-4


@pytest.mark.parametrize("t_chunk", [4, 12, 32, 64])
def test_encode_chunked_equals_direct(tiny, t_chunk):
    params, config, vec = tiny
    x = cl(vec["long/x"])  # T = 33
    direct = wfvae_jax.encode(params, x, config)
    chunked = wfvae_jax.encode(params, x, config, t_chunk=t_chunk)
    assert np.abs(chunked.mean - direct.mean).max() <= TOL
    assert np.abs(chunked.logvar - direct.logvar).max() <= TOL


@pytest.mark.parametrize("t_chunk", [1, 2, 3, 8, 20])
def test_decode_chunked_equals_direct(tiny, t_chunk):
    params, config, vec = tiny
    z = cl(vec["long/z"])  # 9 latent frames
    direct = wfvae_jax.decode(params, z, config)
    chunked = wfvae_jax.decode(params, z, config, t_chunk=t_chunk)
    assert chunked.shape == direct.shape
    assert np.abs(chunked - direct).max() <= TOL


RANDOM_CONFIGS = [
    dict(encoder_num_resblocks=1, decoder_num_resblocks=3, connect_res_layer_num=2),
    dict(latent_dim=16, t_interpolation="nearest", use_attention=False),
]


@pytest.mark.parametrize("overrides", RANDOM_CONFIGS)
@pytest.mark.parametrize("t,t_chunk", [(5, 4), (13, 8), (21, 8)])
def test_random_configs(overrides, t, t_chunk):
    cfg = WFVAEConfig(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=8,
        norm_type="layernorm",
        t_interpolation="trilinear",
    ).replace(**overrides)
    params = wfvae_jax.init_params(cfg, jax.random.key(3))
    x = np.random.default_rng(t).uniform(-1, 1, (2, t, 16, 24, 3)).astype(np.float32)
    d = wfvae_jax.encode(params, x, cfg)
    c = wfvae_jax.encode(params, x, cfg, t_chunk=t_chunk)
    assert np.abs(c.mean - d.mean).max() <= TOL
    yd = wfvae_jax.decode(params, d.mean, cfg)
    yc = wfvae_jax.decode(params, d.mean, cfg, t_chunk=t_chunk // 4)
    assert np.abs(yc - yd).max() <= TOL


def test_groupnorm_refuses_chunking():
    cfg = WFVAEConfig(
        base_channels=32,
        encoder_energy_flow_hidden_size=32,
        decoder_energy_flow_hidden_size=32,
        norm_type="groupnorm",
    )
    params = jax.eval_shape(lambda: wfvae_jax.init_params(cfg, jax.random.key(0)))
    with pytest.raises(ValueError, match="groupnorm"):
        causal_cache.encode_chunked(params, np.zeros((1, 5, 8, 8, 3), np.float32), cfg, 4)
    with pytest.raises(ValueError, match="groupnorm"):
        causal_cache.decode_chunked(params, np.zeros((1, 2, 1, 1, 8), np.float32), cfg, 1)


def test_bad_t_chunk(tiny):
    params, config, _ = tiny
    with pytest.raises(ValueError, match="multiple of 4"):
        wfvae_jax.encode(params, np.zeros((1, 9, 8, 8, 3), np.float32), config, t_chunk=6)
    with pytest.raises(ValueError, match="multiple of 1"):
        wfvae_jax.decode(params, np.zeros((1, 3, 1, 1, 8), np.float32), config, t_chunk=0)


def test_scan_body_traced_once_per_chunk_shape(tiny):
    params, config, _ = tiny
    rng = np.random.default_rng(0)
    counts = []
    for t in (33, 129):
        x = rng.uniform(-1, 1, (1, t, 16, 16, 3)).astype(np.float32)
        z = wfvae_jax.encode(params, x, config, t_chunk=8).mean
        wfvae_jax.decode(params, z, config, t_chunk=2)
        counts.append(dict(causal_cache.TRACE_COUNT))
    # 33 and 129 frames reuse the first-chunk, scan-body and final-chunk traces.
    assert counts[1] == counts[0]


def _changed_frames(a, b):
    return [i for i in range(a.shape[1]) if not np.array_equal(a[:, i], b[:, i])]


@pytest.mark.parametrize("t_chunk", [None, (8, 2)])
def test_causality(tiny, t_chunk):
    """Encoder: strictly causal. Decoder: latent j+1 reaches back to frames 4j-1, 4j only.

    The reference decoder's linear time interpolation looks one latent frame ahead, so a change
    in latent frames > j leaves decoded frames <= 4j - 2 unchanged (frames 4j-1, 4j blend in
    latent j+1). Hence in the whole pipeline, changing video frames > t leaves every latent
    frame j with 4j <= t and every decoded frame <= 4*floor(t/4) - 2 unchanged.
    """
    params, config, vec = tiny
    enc_chunk, dec_chunk = t_chunk or (None, None)
    x = cl(vec["long/x"])
    t = 16
    x2 = x.copy()
    x2[:, t + 1 :] = np.random.default_rng(0).uniform(-1, 1, x2[:, t + 1 :].shape)
    z1 = np.asarray(wfvae_jax.encode(params, x, config, t_chunk=enc_chunk).mean)
    z2 = np.asarray(wfvae_jax.encode(params, x2, config, t_chunk=enc_chunk).mean)
    changed = _changed_frames(z1, z2)
    assert changed and min(changed) == t // 4 + 1  # latents j <= 4 (frames <= 16) unchanged
    y1 = np.asarray(wfvae_jax.decode(params, z1, config, t_chunk=dec_chunk))
    y2 = np.asarray(wfvae_jax.decode(params, z2, config, t_chunk=dec_chunk))
    changed = _changed_frames(y1, y2)
    assert changed and min(changed) == 4 * (t // 4) - 1
