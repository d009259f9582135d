"""Latent frequency statistics on synthetic latents with known answers, and the CLI plumbing."""

import json
import types

import jax.numpy as jnp
import numpy as np
import pytest

from wfvae_jax import lc
from wfvae_jax.commands import analyze as lf
from wfvae_jax.errors import UserError


def _const_in_time(t, seed=0, shape=(2, 4, 4, 3)):
    frame = np.random.default_rng(seed).standard_normal((shape[0], 1, *shape[1:]))
    return np.repeat(frame, t, axis=1).astype(np.float32)


@pytest.mark.parametrize("time_mode,t", [("causal", 17), ("noncausal", 16)])
@pytest.mark.parametrize("levels", [0, 2])
def test_time_constant_latent(time_mode, t, levels):
    z = _const_in_time(t)
    st = lf.latent_frequency_stats(z, levels, time_mode)
    low = "L" * (levels + 1)
    shares = lf.temporal_path_shares(lf.energy_shares(st.energy)[0], levels)
    assert shares[low] == pytest.approx(1.0, abs=1e-9)
    paths = [lc.temporal_path(b) if levels else b[0] for b in lc.band_names(levels)]
    is_low = np.array([p == low for p in paths])
    np.testing.assert_allclose(st.lag1[is_low], 1.0, atol=1e-6)
    assert np.all(np.isnan(st.lag1[~is_low]))  # no energy, no variance: undefined
    np.testing.assert_allclose(st.latent_lag1, 1.0, atol=1e-9)
    assert st.energy.sum() == pytest.approx(float(np.square(z.astype(np.float64)).sum()), rel=1e-5)


def test_white_noise_spreads_energy_evenly():
    z = np.random.default_rng(1).standard_normal((4, 32, 16, 16, 4)).astype(np.float32)
    st = lf.latent_frequency_stats(z, 2, "noncausal")
    band_share, channel_share = lf.energy_shares(st.energy)
    # 4096 values per band: relative sampling std about sqrt(2 / 4096) = 2.2%.
    np.testing.assert_allclose(band_share, 1 / 32, rtol=0.1)
    np.testing.assert_allclose(channel_share, 1 / 128, rtol=0.25)
    # rho(1) of iid pairs has std 1/sqrt(n): 768 coefficient pairs per band and channel, 31744
    # latent pairs per channel; allow 5 sigma (the band mean over 128 series: 5 sigma of its own).
    assert np.max(np.abs(st.lag1)) < 5 / np.sqrt(768)
    assert abs(np.mean(st.lag1)) < 5 / np.sqrt(768 * 128)
    assert np.max(np.abs(st.latent_lag1)) < 5 / np.sqrt(31744)


def test_white_noise_causal_first_frame_share():
    # Causal: frame 0 (1/T of the energy) lands in the 4 all-temporal-low bands only.
    t = 33
    z = np.random.default_rng(2).standard_normal((4, t, 16, 16, 4)).astype(np.float32)
    band_share, _ = lf.energy_shares(lf.latent_frequency_stats(z, 2, "causal").energy)
    expected = np.full(32, (t - 1) / t / 32)
    expected[:4] += 1 / t / 4
    np.testing.assert_allclose(band_share, expected, rtol=0.1)


def test_ar1_process_gives_its_coefficient():
    phi, rng = 0.8, np.random.default_rng(3)
    x = np.empty((8, 33, 8, 8, 2))
    x[:, 0] = rng.standard_normal(x[:, 0].shape)
    for t in range(1, 33):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(x[:, t].shape)
    rho = lf.lag1_autocorrelation(x.astype(np.float32))
    np.testing.assert_allclose(rho, phi, atol=0.03)


@pytest.mark.parametrize("skip_first", [False, True])
def test_lag1_matches_numpy_corrcoef(skip_first):
    rng = np.random.default_rng(4)
    x = np.cumsum(rng.standard_normal((3, 7, 2, 3, 5)), axis=1) + rng.standard_normal(5)
    rho = lf.lag1_autocorrelation(x, skip_first=skip_first)
    y = x[:, 1:] if skip_first else x
    for c in range(5):
        ref = np.corrcoef(y[:, :-1, ..., c].ravel(), y[:, 1:, ..., c].ravel())[0, 1]
        assert rho[c] == pytest.approx(ref, abs=1e-12)
    assert np.all(np.isnan(lf.lag1_autocorrelation(x[:, :1])))


def test_band_channel_energy_layout():
    coeffs = np.zeros((1, 1, 1, 1, 64))
    coeffs[..., 8 * 2 + 1] = 3.0  # band "LL-LHL" (index 2), channel 1
    energy = lf.band_channel_energy(coeffs, 8)
    assert energy.shape == (8, 8) and energy[2, 1] == 9.0 and energy.sum() == 9.0
    with pytest.raises(ValueError):
        lf.band_channel_energy(coeffs, 7)


def test_summarize_pools_videos():
    a = lf.latent_frequency_stats(_const_in_time(9, seed=5), 0, "causal")
    b = lf.latent_frequency_stats(
        np.random.default_rng(6).standard_normal((2, 9, 4, 4, 3)).astype(np.float32), 0, "causal"
    )
    s = lf.summarize([a, b])
    json.dumps(s, allow_nan=False)  # NaN became None
    share = np.array(list(s["band_energy_share"].values()))
    expected = (a.energy + b.energy).sum(axis=1) / (a.energy.sum() + b.energy.sum())
    np.testing.assert_allclose(share, expected, rtol=1e-12)
    assert sum(s["temporal_path_energy_share"].values()) == pytest.approx(1.0)
    # LLL rho(1) is averaged over the two videos; the constant one contributes exactly 1.
    assert s["lag1"]["LLL"][0] == pytest.approx((1.0 + b.lag1[0, 0]) / 2)
    assert s["lag1"]["HHH"][0] == pytest.approx(b.lag1[7, 0])  # only b defines it


def test_cli_writes_json_and_plots(tmp_path, monkeypatch):
    import wfvae_jax
    from wfvae_jax.io.video import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (33, 32, 32, 3), np.uint8)
    for name in ("a.mp4", "b.mkv"):
        write_video(videos / name, frames, fps=25)
    (videos / "notes.txt").write_bytes(b"")
    pattern = jnp.asarray(_const_in_time(1, seed=7, shape=(1, 4, 4, 2)))

    cfg = wfvae_jax.WFVAEConfig()

    def fake_encode(params, x, config, dtype, t_chunk):
        assert x.shape == (1, 33, 32, 32, 3) and config is cfg
        mean = jnp.broadcast_to(pattern, (1, 9, 4, 4, 2)) + 0.0 * jnp.sum(x)
        return types.SimpleNamespace(mean=mean)

    monkeypatch.setattr(
        wfvae_jax, "load_pretrained", lambda path, part=None: ({}, cfg), raising=False
    )
    monkeypatch.setattr(wfvae_jax, "encode", fake_encode, raising=False)
    out = tmp_path / "out"
    argv = ["--checkpoint", "ckpt", "--videos", str(videos), "--out", str(out)]
    result = lf.main([*argv, "--resolution", "32", "--levels", "0,2"])
    saved = json.loads((out / "latent_frequency.json").read_text())
    assert (
        saved == result and len(saved["videos"]) == 2 and saved["latent_shape"] == [1, 9, 4, 4, 2]
    )
    assert saved["levels"]["2"]["temporal_path_energy_share"]["LLL"] == pytest.approx(1.0)
    assert saved["levels"]["0"]["lag1"]["LLL"] == pytest.approx([1.0, 1.0])
    for lv in (0, 2):
        for stem in ("energy_share", "channel_energy", "lag1"):
            png = out / f"{stem}_L{lv}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="no video files"):
        lf.main(["--checkpoint", "c", "--videos", str(out), "--out", str(out)])
    with pytest.raises(UserError, match="multiples of 16"):  # the Multi-WT halves h, w again
        lf.main([*argv, "--resolution", "40"])
