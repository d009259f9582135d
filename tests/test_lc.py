"""LC-VAE Multi-WT, masks and compression (wfvae_jax.lc) against PyWavelets and exact identities."""

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from wfvae_jax import lc
from wfvae_jax.core.wavelets import SUBBANDS_3D

ROOT = Path(__file__).resolve().parents[1]


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pywt_multi_wt(z: np.ndarray, levels: int) -> np.ndarray:
    """Independent non-causal Multi-WT: PyWavelets 3D Haar, then full temporal packets."""
    d = pywt.dwtn(z.astype(np.float64), "haar", axes=(1, 2, 3))
    # pywt keys spell (t, h, w) with a = low, d = high; order them as LLL..HHH.
    out = np.concatenate(
        [d[s.replace("L", "a").replace("H", "d").lower()] for s in SUBBANDS_3D], -1
    )
    for _ in range(levels):
        lo, hi = pywt.dwt(out, "haar", axis=1)
        out = np.concatenate([lo, hi], axis=-1)
    return out


def _energy(x) -> float:
    return float(np.sum(np.square(np.asarray(x, np.float64))))


def test_band_names_layout():
    names = lc.band_names(2)
    assert len(names) == 32 and names[:8] == tuple(f"LL-{s}" for s in SUBBANDS_3D)
    assert names.index("LH-HLL") == 12 and names.index("HL-LLL") == 16
    assert lc.band_names(0) == SUBBANDS_3D
    assert lc.temporal_path("LH-HLL") == "LHH" and lc.temporal_path("HL-LHH") == "HLL"
    assert lc.channel_names(2, 1)[:3] == ("L-LLL/c0", "L-LLL/c1", "L-LLH/c0")


@pytest.mark.parametrize("levels", [0, 2])
def test_noncausal_matches_pywavelets(levels):
    z = _rand((2, 8, 4, 6, 3))
    ours = np.asarray(lc.multi_wt(jnp.asarray(z), levels, time_mode="noncausal"))
    np.testing.assert_allclose(ours, _pywt_multi_wt(z, levels), atol=2e-6)


def test_causal_is_spatial_first_frame_plus_noncausal_rest():
    z = _rand((1, 9, 4, 4, 2), seed=1)
    ours = np.asarray(lc.multi_wt(jnp.asarray(z)))
    assert ours.shape == (1, 2, 2, 2, 64)
    np.testing.assert_allclose(ours[:, 1:], _pywt_multi_wt(z[:, 1:], 2), atol=2e-6)
    d = pywt.dwtn(z[:, 0].astype(np.float64), "haar", axes=(1, 2))
    first = np.concatenate([d["aa"], d["ad"], d["da"], d["dd"]], -1)  # LL, LH, HL, HH
    np.testing.assert_allclose(ours[:, 0, ..., :8], first, atol=2e-6)
    np.testing.assert_array_equal(ours[:, 0, ..., 8:], 0.0)


@pytest.mark.parametrize(
    "time_mode,t,levels",
    [
        ("causal", 9, 2),
        ("causal", 1, 2),
        ("causal", 5, 1),
        ("noncausal", 8, 2),
        ("noncausal", 4, 1),
    ],
)
def test_exact_inverse(time_mode, t, levels):
    z = _rand((2, t, 4, 6, 3), seed=t)
    coeffs = lc.multi_wt(jnp.asarray(z), levels, time_mode=time_mode)
    back = np.asarray(lc.inverse_multi_wt(coeffs, levels, time_mode=time_mode))
    np.testing.assert_allclose(back, z, atol=2e-6)
    assert math.isclose(_energy(coeffs), _energy(z), rel_tol=1e-5)  # orthonormal


@pytest.mark.parametrize("time_mode,t", [("causal", 9), ("noncausal", 8)])
def test_reference_scale_round_trip_gain(time_mode, t):
    z = _rand((1, t, 4, 4, 2), seed=3)
    c = lc.multi_wt(jnp.asarray(z), 2, scale="reference", time_mode=time_mode)
    back = np.asarray(lc.inverse_multi_wt(c, 2, scale="reference", time_mode=time_mode))
    gain = 8 * 0.3536**2 * (2 * 0.7071**2) ** 2
    np.testing.assert_allclose(back, z * gain, atol=3e-6)
    assert abs(gain - 1.00022) < 1e-5


@pytest.mark.parametrize("time_mode,t", [("causal", 17), ("noncausal", 16)])
@pytest.mark.parametrize("which", ["fixed", "random", "topk"])
def test_masked_energy_equals_kept_energy(time_mode, t, which):
    z = jnp.asarray(_rand((2, t, 4, 4, 8), seed=5))
    coeffs = lc.multi_wt(z, time_mode=time_mode)
    if which == "fixed":
        mask = lc.fixed_mask(8)
    elif which == "random":
        mask = (np.random.default_rng(0).random(256) < 0.3).astype(np.float32)
    else:
        mask = lc.topk_mask(coeffs, 100)
    out = lc.compress(z, mask, time_mode=time_mode)
    assert out.shape == z.shape
    assert math.isclose(_energy(out), _energy(coeffs * mask), rel_tol=1e-5)
    assert _energy(out) < _energy(z)


def test_compress_is_orthogonal_projection():
    # P = W^T M W with W orthogonal and M a 0/1 diagonal: P is idempotent and d||Pz||^2/dz = 2Pz.
    z = jnp.asarray(_rand((1, 9, 4, 4, 8), seed=6))
    mask = lc.fixed_mask(8)
    project = jax.jit(lambda v: lc.compress(v, mask))
    pz = project(z)
    np.testing.assert_allclose(project(pz), pz, atol=2e-6)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(jnp.square(lc.compress(v, mask)))))(z)
    np.testing.assert_allclose(grad, 2 * pz, atol=5e-6)


def test_fixed_mask_keeps_time_constant_latent():
    # A latent constant in time has no energy on any temporal high-pass path.
    frame = _rand((1, 1, 4, 4, 8), seed=7)
    z = jnp.asarray(np.repeat(frame, 9, axis=1))
    for ratio in (0.25, 0.5):
        out = lc.compress(z, lc.keep_ratio_mask(ratio, 8))
        np.testing.assert_allclose(out, z, atol=2e-6)


@pytest.mark.parametrize(
    "time_mode,shape,match",
    [
        ("causal", (1, 8, 4, 4, 2), "T = 1 \\+ 8m"),
        ("causal", (1, 5, 4, 4, 2), "T = 1 \\+ 8m"),
        ("noncausal", (1, 9, 4, 4, 2), "T = 8m"),
        ("causal", (1, 9, 4, 5, 2), "even"),
        ("causal", (9, 4, 4, 2), "B, T, H, W, C"),
    ],
)
def test_unsplittable_shapes_raise(time_mode, shape, match):
    with pytest.raises(ValueError, match=match):
        lc.multi_wt(jnp.zeros(shape), 2, time_mode=time_mode)


def test_bad_options_raise():
    z = jnp.zeros((1, 9, 4, 4, 2))
    with pytest.raises(ValueError, match="scale"):
        lc.multi_wt(z, scale="0.35")
    with pytest.raises(ValueError, match="time_mode"):
        lc.multi_wt(z, time_mode="pad")
    with pytest.raises(ValueError, match="mask has"):
        lc.compress(z, np.ones(10))
    with pytest.raises(ValueError, match="divisible"):
        lc.inverse_multi_wt(jnp.zeros((1, 2, 2, 2, 60)))


def _ranges(*spans):
    return np.concatenate([np.arange(a, b + 1) for a, b in spans])


# Kept channel indices of the reference's files (1mather/LC-VAE-code @ 141c160,
# causalvideovae/model/channel_name/multi_keep_ratio/fixed_mask_{C}ch_ratio{R}_handcraft.json).
REFERENCE_KEPT = {
    (8, 0.25): _ranges((0, 63)),
    (8, 0.5): _ranges((0, 95), (128, 159)),
    (8, 0.75): _ranges((0, 191)),
    (16, 0.25): _ranges((0, 127)),
    (16, 0.5): _ranges((0, 191), (256, 319)),
    (16, 0.75): _ranges((0, 383)),
}


@pytest.mark.parametrize("latent_dim,ratio", sorted(REFERENCE_KEPT))
def test_masks_match_reference_files(latent_dim, ratio):
    mask = lc.keep_ratio_mask(ratio, latent_dim)
    assert mask.shape == (32 * latent_dim,) and set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.flatnonzero(mask), REFERENCE_KEPT[(latent_dim, ratio)])
    assert mask.sum() == ratio * mask.size
    # The same mask, rebuilt from its temporal paths.
    np.testing.assert_array_equal(mask, lc.band_mask(lc.HANDCRAFTED_PATHS[ratio], latent_dim))


@pytest.mark.parametrize("name", lc.available_masks())
def test_mask_json_is_self_consistent(name):
    mask, meta = lc.load_mask(name)
    paths = {lc.temporal_path(b) for b in meta["keep"]}
    assert paths == set(meta["kept_temporal_paths"])
    assert mask.sum() == sum(len(v) for v in meta["keep"].values())
    assert math.isclose(mask.mean(), meta["keep_ratio"])


def test_fixed_mask_is_half_and_errors():
    np.testing.assert_array_equal(lc.fixed_mask(16), lc.keep_ratio_mask(0.5, 16))
    with pytest.raises(ValueError, match="keep ratio"):
        lc.keep_ratio_mask(0.4, 8)
    with pytest.raises(ValueError, match="latent_dim=4"):
        lc.fixed_mask(4)
    with pytest.raises(ValueError, match="levels=2"):
        lc.fixed_mask(8, levels=1)
    with pytest.raises(FileNotFoundError):
        lc.load_mask("no_such_mask")


def test_topk_keeps_most_energetic_channels():
    rng = np.random.default_rng(8)
    coeffs = rng.standard_normal((3, 2, 2, 2, 64)).astype(np.float32)
    coeffs *= rng.permuted(np.tile(np.arange(1, 65, dtype=np.float32), (3, 1)), axis=1)[
        :, None, None, None, :
    ]
    mask = np.asarray(lc.topk_mask(jnp.asarray(coeffs), 20))
    assert mask.shape == (3, 1, 1, 1, 64)
    energy = np.square(coeffs.astype(np.float64)).sum(axis=(1, 2, 3))
    for b in range(3):
        kept = np.flatnonzero(mask[b, 0, 0, 0])
        np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-energy[b])[:20]))
    assert np.all(mask.sum(axis=-1) == 20)


def test_topk_position_mask_counts():
    coeffs = jnp.asarray(_rand((2, 2, 2, 2, 16), seed=9))
    mask = np.asarray(lc.topk_position_mask(coeffs, 0.25))
    assert mask.shape == coeffs.shape
    sq = np.square(np.asarray(coeffs)).reshape(2, -1)
    for b in range(2):
        m = mask[b].reshape(-1).astype(bool)
        assert m.sum() == 32 and sq[b][m].min() >= sq[b][~m].max()


def test_pack_unpack():
    c = jnp.asarray(_rand((1, 2, 2, 2, 256), seed=10))
    mask = lc.fixed_mask(8)
    packed = lc.pack(c, mask)
    assert packed.shape[-1] == 128
    np.testing.assert_array_equal(lc.unpack(packed, mask), c * mask)


def _load_config(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


@pytest.mark.parametrize("latent_dim", [8, 16])
def test_configs_build_compressors(latent_dim):
    from wfvae_jax.lc import LCVAE
    from wfvae_jax.train.loop import lc_settings, step_config

    get_config = _load_config("lc_vae")
    cfg = get_config(str(latent_dim))
    assert cfg.model.overrides.latent_dim == latent_dim and cfg.model.lc.enabled
    assert (cfg.num_steps, cfg.optim.learning_rate, cfg.data.batch_size, cfg.data.resolution) == (
        200_000,
        1e-5,
        32,
        256,
    )
    # Clip length must give a latent the causal Multi-WT can split (1 + 4k frames -> 1 + k).
    latent_t = 1 + (cfg.data.num_frames - 1) // 4
    z = jnp.asarray(_rand((1, latent_t, 4, 4, latent_dim), seed=11))
    model = step_config(cfg).build_model()
    assert isinstance(model, LCVAE) and model.config.latent_dim == latent_dim
    np.testing.assert_allclose(
        model.process_latent(z), lc.compress(z, lc.fixed_mask(latent_dim)), atol=1e-6
    )
    assert lc_settings(get_config(f"{latent_dim},none")) is None
    topk = lc_settings(get_config(f"{latent_dim},topk50"))
    out = lc.make_compressor(latent_dim, topk.mask, topk.keep_ratio)(z)
    kept = lc.topk_mask(lc.multi_wt(z), 16 * latent_dim)
    assert math.isclose(_energy(out), _energy(lc.multi_wt(z) * kept), rel_tol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        get_config(f"{latent_dim},keep40")
    with pytest.raises(ValueError, match="latent_dim"):
        get_config("12")
