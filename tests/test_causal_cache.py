"""Causal Cache: chunked == direct, compile-once, and causality, on both paths.

For both shared tiny checkpoints: ``tiny`` (4x temporal) and ``tiny888`` (the 8x8x8 variant,
encoder chunks a multiple of 8 video frames).
"""

import jax
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.inference import api, causal_cache

TOL = 1e-5
L1_8X = dict(
    l1_dowmsample_block="Spatial2xTime2x3DDownsample",
    l1_downsample_wavelet="HaarWaveletTransform3D",
    l1_upsample_block="Spatial2xTime2x3DUpsample",
    l1_upsample_wavelet="InverseHaarWaveletTransform3D",
)


def cl(a):
    return np.moveaxis(a, 1, -1)


def slow(*values):
    """A parametrization in the slow tier: the fast tier checks Causal Cache on the 4x tiny
    checkpoint (against the reference and against direct), the slow tier every other case."""
    return pytest.param(*values, marks=pytest.mark.slow)


def test_long_case_against_reference_outputs(tiny):
    params, config, vec = tiny
    x = cl(vec["long/x"])
    post = wfvae_jax.encode(params, x, config, t_chunk=8)
    ref = cl(vec["long/moments"])
    got = np.concatenate([post.mean, post.logvar], -1)
    assert np.abs(got - ref).max() <= 1e-4
    y = wfvae_jax.decode(params, cl(vec["long/z"]), config, t_chunk=2)
    assert np.abs(y - cl(vec["long/y"])).max() <= 1e-4


# The reference's auto-selected chunks (encoder, decoder) for its z_tiled / y_tiled.
@pytest.mark.parametrize("case,chunks", [slow("short", (8, 2)), slow("long", (8, 8))])
def test_8x_against_reference_chunked_outputs(tiny888, case, chunks):
    params, config, vec = tiny888
    post = wfvae_jax.encode(params, cl(vec[f"{case}/x"]), config, t_chunk=chunks[0])
    assert np.abs(post.mean - cl(vec[f"{case}/z_tiled"])).max() <= 1e-4
    y = wfvae_jax.decode(params, cl(vec[f"{case}/z"]), config, t_chunk=chunks[1])
    assert y.shape == vec[f"{case}/x"].shape[:1] + vec[f"{case}/x"].shape[2:] + (3,)
    assert np.abs(y - cl(vec[f"{case}/y_tiled"])).max() <= 1e-4


@pytest.mark.parametrize(
    "ckpt,t_chunk",
    [("tiny", 12)]
    + [slow("tiny", c) for c in (4, 32, 64)]
    + [slow("tiny888", c) for c in (8, 16, 24, 64)],
)
def test_encode_chunked_equals_direct(request, ckpt, t_chunk):
    params, config, vec = request.getfixturevalue(ckpt)
    x = cl(vec["long/x"])  # T = 33 (4x), 41 (8x)
    direct = wfvae_jax.encode(params, x, config)
    chunked = wfvae_jax.encode(params, x, config, t_chunk=t_chunk)
    assert np.abs(chunked.mean - direct.mean).max() <= TOL
    assert np.abs(chunked.logvar - direct.logvar).max() <= TOL


@pytest.mark.parametrize(
    "ckpt,t_chunk",
    [("tiny", 3)]
    + [slow("tiny", c) for c in (1, 2, 8, 20)]
    + [slow("tiny888", c) for c in (1, 2, 3, 4, 8)],
)
def test_decode_chunked_equals_direct(request, ckpt, t_chunk):
    params, config, vec = request.getfixturevalue(ckpt)
    z = cl(vec["long/z"])  # 9 latent frames (4x), 6 (8x)
    direct = wfvae_jax.decode(params, z, config)
    chunked = wfvae_jax.decode(params, z, config, t_chunk=t_chunk)
    assert chunked.shape == direct.shape
    assert np.abs(chunked - direct).max() <= TOL


RANDOM_CONFIGS = [
    dict(encoder_num_resblocks=1, decoder_num_resblocks=3, connect_res_layer_num=2),
    dict(latent_dim=16, t_interpolation="nearest", use_attention=False),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", RANDOM_CONFIGS)
@pytest.mark.parametrize(
    "variant,t,t_chunk",
    # 21 = 1 + 8 + 8 + 4 and 41 = 1 + 24 + 16: scan steps and a shorter last chunk; decoder
    # chunks of 2 (4x) and 3 (8x) latent frames, the last one 1 and 2 frames. A clip of one
    # chunk (no encoder remainder, no decoder scan) runs the same steps minus some: the tiny
    # checkpoints' test_encode/decode_chunked_equals_direct cover it for both variants.
    [("4x", 21, 8), ("8x", 41, 24)],
)
def test_random_configs(overrides, variant, t, t_chunk):
    cfg = WFVAEConfig(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=8,
        norm_type="layernorm",
        t_interpolation="trilinear",
        **(L1_8X if variant == "8x" else {}),
    ).replace(**overrides)
    params = wfvae_jax.init_params(cfg, jax.random.key(3))
    x = np.random.default_rng(t).uniform(-1, 1, (2, t, 16, 24, 3)).astype(np.float32)
    d = wfvae_jax.encode(params, x, cfg)
    c = wfvae_jax.encode(params, x, cfg, t_chunk=t_chunk)
    assert np.abs(c.mean - d.mean).max() <= TOL
    yd = wfvae_jax.decode(params, d.mean, cfg)
    assert yd.shape[1] == t
    yc = wfvae_jax.decode(params, d.mean, cfg, t_chunk=cfg.latent_chunk(t_chunk))  # t_chunk / d
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
    # t_chunk=0 is direct inference (api.auto_t_chunk); below 0 is an error.
    with pytest.raises(ValueError, match="0 \\(direct\\) or a chunk size, got -1"):
        wfvae_jax.decode(params, np.zeros((1, 3, 1, 1, 8), np.float32), config, t_chunk=-1)
    with pytest.raises(ValueError, match="multiple of 1"):
        causal_cache.decode_chunked(params, np.zeros((1, 3, 1, 1, 8), np.float32), config, 0)


def test_bad_t_chunk_8x(tiny888):
    params, config, _ = tiny888
    for bad in (4, 12):  # valid for the 4x model, not for 8x
        with pytest.raises(ValueError, match="multiple of 8"):
            wfvae_jax.encode(params, np.zeros((1, 17, 8, 8, 3), np.float32), config, t_chunk=bad)


@pytest.mark.parametrize("ckpt,lengths", [("tiny", (33, 129)), ("tiny888", (49, 129))])
def test_scan_body_traced_once_per_chunk_shape(request, ckpt, lengths):
    params, config, _ = request.getfixturevalue(ckpt)
    counts = []
    for t in lengths:
        # Tracing is what is counted: lowering (what encode/decode run, no XLA compile) does it.
        x = jax.ShapeDtypeStruct((1, t, 16, 16, 3), np.float32)
        z = jax.ShapeDtypeStruct((1, config.latent_frames(t), 2, 2, config.latent_dim), np.float32)
        api.lower_encode(params, x, config, t_chunk=8)
        api.lower_decode(params, z, config, t_chunk=2)
        counts.append(dict(causal_cache.TRACE_COUNT))
    # 33 and 129 (4x) or 49 and 129 (8x) frames reuse the first-chunk, scan-body and final-chunk
    # traces (the same decoder remainder: 2 latent frames).
    assert counts[1] == counts[0]


def _changed_frames(a, b):
    return [i for i in range(a.shape[1]) if not np.array_equal(a[:, i], b[:, i])]


@pytest.mark.parametrize(
    "ckpt,t_chunk,t",
    # (8, 2) on the 4x clip: the programs test_long_case_against_reference_outputs compiled.
    [("tiny", (8, 2), 16)]
    + [slow("tiny", None, 16), slow("tiny888", (8, 2), 20), slow("tiny888", None, 20)]
    + [slow("tiny888", (16, 1), 20)],
)
def test_causality(request, ckpt, t_chunk, t):
    """Encoder: strictly causal. Decoder: latent j+1 reaches back to the last d - 2 frames of j.

    With ``d = temporal_downsample`` latent j holds video frames up to ``d j``. The reference
    decoder's linear time interpolation looks one latent frame ahead. 4x: a change in latent
    frames > j leaves decoded frames <= 4j - 2 unchanged (frames 4j-1, 4j blend in latent j+1).
    8x: up2's output frames <= 2j - 1 stay (frame 2j blends in latent j+1), so up1's output
    frames <= 2(2j - 1) - 1 = 4j - 3 (and the W2 outflow's inverse 3D Haar, frames <= 4j - 2),
    so decoded frames <= 8j - 6: frames 8j-5 .. 8j blend in latent j+1. Hence in the whole
    pipeline, changing video frames > t leaves every latent frame j with d j <= t and every
    decoded frame <= d*floor(t/d) - d + 2 unchanged.
    """
    params, config, vec = request.getfixturevalue(ckpt)
    d = config.temporal_downsample
    enc_chunk, dec_chunk = t_chunk or (None, None)
    x = cl(vec["long/x"])  # T = 33 (4x), 41 (8x)
    x2 = x.copy()
    x2[:, t + 1 :] = np.random.default_rng(0).uniform(-1, 1, x2[:, t + 1 :].shape)
    z1 = np.asarray(wfvae_jax.encode(params, x, config, t_chunk=enc_chunk).mean)
    z2 = np.asarray(wfvae_jax.encode(params, x2, config, t_chunk=enc_chunk).mean)
    changed = _changed_frames(z1, z2)
    assert changed and min(changed) == t // d + 1  # latents j with d j <= t unchanged
    y1 = np.asarray(wfvae_jax.decode(params, z1, config, t_chunk=dec_chunk))
    y2 = np.asarray(wfvae_jax.decode(params, z2, config, t_chunk=dec_chunk))
    changed = _changed_frames(y1, y2)
    assert changed and min(changed) == d * (t // d) - d + 3


@pytest.mark.slow  # four eager decoder applies; chunked == direct above checks the carry too
def test_decoder_steps_carry_the_lookahead(tiny):
    """The step protocol decode_chunked scans: frames 0-1 (1 = lookahead), then 2.. alone.

    The second step reads only z[:, 2:]: frame 1's latent-rate outputs come from the cache, so
    the result can only equal direct decoding if the carried frame is right. A last step may
    hold nothing but the carried frame; a first step must hold a frame.
    """
    params, config, vec = tiny
    z = cl(vec["long/z"])  # 9 latent frames
    model = wfvae_jax.WFVAE(config)
    direct = np.asarray(wfvae_jax.decode(params, z, config, t_chunk=0))

    def step(zc, cache, lookahead):
        y, _, c = model.apply({"params": params}, zc, cache, lookahead, method=model.decode)
        return np.asarray(y), c

    y0, c = step(z[:, :2], None, 1)
    assert c["lookahead"][0].shape[1] == 1
    y1, c = step(z[:, 2:8], c, 1)  # own frames 1..6, lookahead 7
    y2, _ = step(z[:, 8:8], c, 0)  # own frame 7 only (carried): the clip z[:, :8] ends there
    y3, _ = step(z[:, 8:], c, 0)  # own frames 7, 8
    assert y0.shape[1] == 1 and y1.shape[1] == 24 and y2.shape[1] == 4
    assert np.abs(np.concatenate([y0, y1, y3], 1) - direct).max() <= TOL
    direct8 = np.asarray(wfvae_jax.decode(params, z[:, :8], config, t_chunk=0))
    assert np.abs(np.concatenate([y0, y1, y2], 1) - direct8).max() <= TOL
    with pytest.raises(ValueError, match="at least one latent frame"):
        step(z[:, :0], None, 0)
