"""The default Causal Cache chunk (``api.auto_t_chunk``): its rule, and that encode / decode /
reconstruct follow it, with ``t_chunk=0`` and ``return_taps`` forcing direct inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.core.config import get_config
from wfvae_jax.inference import api, causal_cache

TOL = 1e-5


def cl(a):
    return np.moveaxis(a, 1, -1)


@pytest.fixture
def spy(monkeypatch):
    """Records the t_chunk of every chunked encode / decode call (None: none was made)."""
    calls = {"encode": [], "decode": []}
    enc, dec = causal_cache.encode_chunked, causal_cache.decode_chunked

    def encode_chunked(params, video, config, t_chunk, **kw):
        calls["encode"].append(t_chunk)
        return enc(params, video, config, t_chunk, **kw)

    def decode_chunked(params, z, config, t_chunk, **kw):
        calls["decode"].append(t_chunk)
        return dec(params, z, config, t_chunk, **kw)

    monkeypatch.setattr(causal_cache, "encode_chunked", encode_chunked)
    monkeypatch.setattr(causal_cache, "decode_chunked", decode_chunked)
    return calls


@pytest.mark.parametrize(
    "t,size,want",
    [
        (33, 256, 16),  # 16 frames of 256x256 = AUTO_CHUNK_PIXELS
        (17, 256, 0),  # first frame + one chunk: direct
        (21, 256, 16),
        (33, 128, 0),  # 64-frame chunks at 128x128
        (129, 128, 64),
        (33, 512, 4),  # at least one latent frame per chunk
        (5, 512, 0),
        (1, 256, 0),  # an image
        (33, 32, 0),
    ],
)
def test_rule_4x(t, size, want):
    cfg = get_config("WF-VAE-S")
    assert api.AUTO_CHUNK_PIXELS == 16 * 256 * 256
    assert api.auto_t_chunk(cfg, t, size, size) == want


@pytest.mark.parametrize("t,size,want", [(41, 256, 16), (17, 256, 0), (25, 512, 8), (9, 512, 0)])
def test_rule_8x(t, size, want):
    cfg = get_config("OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn")
    assert cfg.temporal_downsample == 8
    assert api.auto_t_chunk(cfg, t, size, size) == want


@pytest.mark.parametrize("name", ["WF-VAE-S", "OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn"])
def test_rule_units_and_budget(name):
    """Chunks are multiples of d, within the pixel budget (or one latent frame), and only
    offered when the clip is longer than one chunk."""
    cfg = get_config(name)
    d = cfg.temporal_downsample
    for h, w in [(64, 64), (256, 256), (256, 448), (512, 512), (720, 1280), (1024, 1024)]:
        for k in range(0, 40):
            t = 1 + d * k
            c = api.auto_t_chunk(cfg, t, h, w)
            if c == 0:
                assert t - 1 <= d * max(1, api.AUTO_CHUNK_PIXELS // (h * w * d))
                continue
            assert c % d == 0 and c >= d and t - 1 > c
            assert c * h * w <= max(api.AUTO_CHUNK_PIXELS, d * h * w)


def test_rule_rejects_bad_frames_and_groupnorm():
    cfg = get_config("WF-VAE-S")
    with pytest.raises(ValueError, match="nearest"):
        api.auto_t_chunk(cfg, 32, 256, 256)
    with pytest.raises(ValueError, match="positive"):
        api.auto_t_chunk(cfg, 33, 0, 256)
    assert api.auto_t_chunk(cfg.replace(norm_type="groupnorm"), 129, 512, 512) == 0


@pytest.mark.slow  # compiles direct and chunked encode and decode
@pytest.mark.parametrize("ckpt", ["tiny", "tiny888"])
def test_auto_equals_direct(request, monkeypatch, spy, ckpt):
    """A long clip (budget lowered to 8 frames of 32x32 for the test) is chunked by default and
    gives the direct result to float rounding; t_chunk=0 stays direct."""
    params, config, vec = request.getfixturevalue(ckpt)
    d = config.temporal_downsample
    x = cl(vec["long/x"])  # (1, 33 or 41, 32, 32, 3)
    monkeypatch.setattr(api, "AUTO_CHUNK_PIXELS", 8 * 32 * 32)
    want = api.auto_t_chunk(config, x.shape[1], 32, 32)
    assert want == d * max(1, 8 // d) and want < x.shape[1] - 1

    direct = wfvae_jax.encode(params, x, config, t_chunk=0)
    assert spy["encode"] == []
    auto = wfvae_jax.encode(params, x, config)
    assert spy["encode"] == [want]
    assert np.abs(auto.mean - direct.mean).max() <= TOL
    assert np.abs(auto.logvar - direct.logvar).max() <= TOL

    z = direct.mode()
    y_direct = wfvae_jax.decode(params, z, config, t_chunk=0)
    assert spy["decode"] == []
    y_auto = wfvae_jax.decode(params, z, config)
    assert spy["decode"] == [config.latent_chunk(want)]
    assert y_auto.shape == x.shape
    assert np.abs(y_auto - y_direct).max() <= TOL

    r = wfvae_jax.reconstruct(params, x, config)
    assert spy["encode"][-1] == want and spy["decode"][-1] == config.latent_chunk(want)
    assert np.abs(r - y_direct).max() <= 2 * TOL
    n = len(spy["encode"])
    wfvae_jax.reconstruct(params, x, config, t_chunk=0)
    assert len(spy["encode"]) == n and len(spy["decode"]) == n


def test_short_clips_and_taps_stay_direct(tiny, monkeypatch, spy):
    params, config, vec = tiny
    x = cl(vec["long/x"])  # T = 33 at 32x32: far below the default budget
    post = wfvae_jax.encode(params, x, config)
    wfvae_jax.decode(params, post.mode(), config)
    assert spy == {"encode": [], "decode": []}

    monkeypatch.setattr(api, "AUTO_CHUNK_PIXELS", 4 * 32 * 32)
    post, taps = wfvae_jax.encode(params, x, config, return_taps=True)  # implies direct
    y, dtaps = wfvae_jax.decode(params, post.mode(), config, return_taps=True)
    assert spy == {"encode": [], "decode": []}
    assert len(taps) == 2 and len(dtaps) == 2 and y.shape == x.shape
    with pytest.raises(ValueError, match="return_taps"):
        wfvae_jax.encode(params, x, config, t_chunk=8, return_taps=True)
    with pytest.raises(ValueError, match="return_taps"):
        wfvae_jax.decode(params, post.mode(), config, t_chunk=2, return_taps=True)
    with pytest.raises(ValueError, match="t_chunk must be None"):
        wfvae_jax.encode(params, x, config, t_chunk=-4)


def test_lowering_follows_the_rule(tiny, monkeypatch):
    """lower_encode / lower_decode lower what encode / decode run: the auto chunk by default."""
    params, config, _ = tiny
    monkeypatch.setattr(api, "AUTO_CHUNK_PIXELS", 8 * 32 * 32)
    video = jax.ShapeDtypeStruct((1, 33, 32, 32, 3), jnp.float32)
    z = jax.ShapeDtypeStruct((1, 9, 4, 4, config.latent_dim), jnp.float32)

    def text(lower, x, **kw):
        return lower(params, x, config, **kw).as_text()

    assert text(api.lower_encode, video) == text(api.lower_encode, video, t_chunk=8)
    assert text(api.lower_encode, video, t_chunk=0) != text(api.lower_encode, video, t_chunk=8)
    assert text(api.lower_decode, z) == text(api.lower_decode, z, t_chunk=2)
    assert text(api.lower_decode, z, t_chunk=0) != text(api.lower_decode, z, t_chunk=2)


def test_cli_t_chunk_check():
    from wfvae_jax.commands.reconstruct import check_t_chunk
    from wfvae_jax.errors import UserError

    cfg = get_config("WF-VAE-S")
    for ok in (None, 0, 4, 16):
        check_t_chunk(ok, cfg)
    with pytest.raises(UserError, match="0 \\(direct\\) or a positive multiple of 4") as e:
        check_t_chunk(6, cfg)
    assert e.value.hint == "pass --t_chunk 8"
    assert "0 = direct" in api.T_CHUNK_HELP and "auto" in api.T_CHUNK_HELP
