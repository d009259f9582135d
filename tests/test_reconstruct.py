"""End-to-end reconstruct command on a real clip (random tiny weights: the pipeline only)."""

import importlib
import json

import av
import jax
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.commands.convert import main as convert_main
from wfvae_jax.commands.reconstruct import main, reconstruct_file
from wfvae_jax.errors import UserError
from wfvae_jax.io import video as video_io
from wfvae_jax.io.video import ClipSpec
from wfvae_jax.metrics import frames as metrics_frames
from wfvae_jax.metrics import psnr

from .conftest import DATA, TINY

CLIP = DATA / "videos" / "bikes_0120.mp4"
# The module (its name is shadowed by the function in wfvae_jax.metrics).
ssim_module = importlib.import_module("wfvae_jax.metrics.ssim")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    convert_main([str(TINY), str(out)])
    return out


def test_reconstruct_writes_outputs_and_consistent_metrics(converted, tmp_path):
    out = tmp_path / "rec.mp4"
    argv = ["--checkpoint", str(converted), "--input", str(CLIP), "--output", str(out)]
    main([*argv, "--num_frames", "9", "--resolution", "32", "--frame_stride", "2"])
    r = json.loads((tmp_path / "rec.json").read_text())
    assert r["shape"] == [1, 9, 32, 32, 3] and r["latent_shape"] == [1, 3, 4, 4, 8]
    assert (tmp_path / "rec.png").stat().st_size > 0
    written = video_io.read_video(out, None)
    assert written.shape == (9, 32, 32, 3)
    # PSNR from the JSON agrees with an independent numpy computation on the decoded clip
    # (the mp4 is lossy, so only loosely).
    x = video_io.read_video(CLIP, 9, 2, 0, 32)
    mse = np.mean(((x + 1) / 2 - (written + 1) / 2) ** 2)
    assert abs(-10 * np.log10(mse) - r["psnr"]) < 1.0
    assert len(r["psnr_per_frame"]) == 9
    # The output keeps the source frame rate divided by the stride (not a fixed 25 fps).
    with av.open(str(CLIP)) as c:
        source_fps = float(c.streams.video[0].average_rate)
    with av.open(str(out)) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(source_fps / 2, rel=1e-3)
    assert r["fps"] == pytest.approx(source_fps / 2)
    # The crop is reported: 160x68 -> 75x32 -> a 32x32 window keeps 43% of the width.
    assert "keeps 43% of the width" in r["geometry"] and r["clip"]["crop"] == "center"


def test_reconstruct_crop_none_keeps_aspect(converted, tmp_path):
    spec = ClipSpec(num_frames=5, resolution=32, crop="none")
    r = reconstruct_file(str(converted), str(CLIP), str(tmp_path / "w.mp4"), spec)
    # 160x68 source: short side 32, long side 160 * 32 / 68 = 75.3 -> 72 (a multiple of 8).
    assert r["shape"] == [1, 5, 32, 72, 3] and "no crop" in r["geometry"]


def test_reconstruct_rejects_bad_frame_count(converted, tmp_path):
    with pytest.raises(UserError, match="nearest valid T is 9") as e:
        reconstruct_file(str(converted), str(CLIP), str(tmp_path / "x.mp4"), ClipSpec(10, 1, 0, 32))
    assert e.value.hint == "pass --num_frames 9"
    with pytest.raises(UserError, match="multiple of 4") as e:
        reconstruct_file(str(converted), str(CLIP), str(tmp_path / "x.mp4"), ClipSpec(9), 6)
    assert e.value.hint == "pass --t_chunk 8"


@pytest.mark.slow  # two more compiles; test_causal_cache checks chunked == direct in the fast tier
def test_chunked_reconstruction_matches_direct(converted, tmp_path):
    spec = ClipSpec(17, 1, 0, 32)
    a = reconstruct_file(str(converted), str(CLIP), str(tmp_path / "a.mp4"), spec)
    b = reconstruct_file(str(converted), str(CLIP), str(tmp_path / "b.mp4"), spec, t_chunk=8)
    assert abs(a["psnr"] - b["psnr"]) < 1e-4
    assert (a["t_chunk"], b["t_chunk"]) == (0, 8)  # the chunk used: auto is direct for 17x32x32


def test_reconstruct_metrics_run_in_bounded_chunks(converted, tmp_path, monkeypatch):
    """The command's SSIM never sees more frames per call than the pixel budget allows, and the
    chunked values equal one whole-clip call (fails if the chunking is removed)."""
    seen = []
    real = ssim_module._ssim_frames

    def spy(x, y):
        seen.append(x.shape[1])
        return real(x, y)

    monkeypatch.setattr(ssim_module, "_ssim_frames", spy)
    monkeypatch.setattr(metrics_frames, "PIXELS_PER_CALL", 4 * 32 * 32)  # 4 frames of 32x32
    r = reconstruct_file(str(converted), str(CLIP), str(tmp_path / "c.mp4"), ClipSpec(17, 1, 0, 32))
    assert seen == [4, 4, 4, 4, 1]
    x = video_io.read_video(CLIP, 17, 1, 0, 32)[None]
    y = np.clip(video_io.read_video(tmp_path / "c.mp4", None)[None], -1, 1)
    assert np.isfinite(r["ssim"])
    # Independent of the command: chunked SSIM of any pair equals the single call.
    whole = np.asarray(real(x, y))
    chunked = np.asarray(ssim_module.ssim(x, y, frame_chunk=3))
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


def test_api_reconstruct_applies_lc_settings(converted, tmp_path):
    from wfvae_jax import lc
    from wfvae_jax.io.checkpoint import load_lc_settings

    params, config = wfvae_jax.load_pretrained(converted)
    x = video_io.read_video(CLIP, 17, 1, 0, 32)[None]  # 5 latent frames: 1 + 4m for 1 level
    settings = lc.LCSettings(mask="topk", keep_ratio=0.25, levels=1)
    y, z = wfvae_jax.reconstruct(params, x, config, lc=settings, return_latent=True)
    coeffs = lc.multi_wt(z, 1)
    kept = lc.inverse_multi_wt(coeffs * lc.topk_mask(coeffs, 32), 1)  # 25% of 8 * 2 * 8 bands
    want = wfvae_jax.decode(params, kept, config)
    np.testing.assert_allclose(y, want, atol=1e-5)
    # Same under jit (training samples), and an export carries the settings.
    yj = jax.jit(lambda p, v: wfvae_jax.reconstruct(p, v, config, lc=settings))(params, x)
    np.testing.assert_allclose(yj, y, atol=1e-5)
    export = tmp_path / "export"
    wfvae_jax.save_pretrained(export, params, config, lc=settings)
    assert load_lc_settings(export) == settings and load_lc_settings(converted) is None
    assert wfvae_jax.load_pretrained(export)[1] == config
    r = reconstruct_file(str(export), str(CLIP), str(tmp_path / "lc.mp4"), ClipSpec(17, 1, 0, 32))
    assert r["lc"] == settings.to_dict()
    expected_psnr = np.mean(np.asarray(psnr(x, y)))
    assert r["psnr"] == pytest.approx(float(expected_psnr), abs=1e-4)
