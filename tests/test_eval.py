"""Tests of eval.py (wfvae_jax.eval) and commands.latent_stats on the tiny random-weight model.

References are independent: PSNR in numpy float64, SSIM from scikit-image, FVD from the
metrics module on features recomputed from the saved arrays, clip frames from read_video,
latent statistics from numpy over the encoder's output, and the Causal Cache comparison from the
saved direct and chunked reconstructions.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file
from skimage.metrics import structural_similarity

import wfvae_jax
from wfvae_jax.commands import latent_stats
from wfvae_jax.commands.eval import main as eval_main
from wfvae_jax.errors import UserError
from wfvae_jax.eval import EvalOptions, FolderClips, evaluate, load_train_checkpoint
from wfvae_jax.io.video import count_frames, read_video
from wfvae_jax.metrics import lpips
from wfvae_jax.metrics.fvd import fvd_from_features
from wfvae_jax.metrics.weights import flatten_tree

DATA = pathlib.Path(__file__).parent / "data"
VIDEOS = DATA / "videos"
T, RES = 9, 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A converted-checkpoint directory: the random-weight tiny WF-VAE of tests/data/wfvae_tiny
    (converting is much faster than a first eager ``init_params``)."""
    from wfvae_jax.io.convert import load_reference

    params, config = load_reference(DATA / "wfvae_tiny")
    path = tmp_path_factory.mktemp("tiny_ckpt")
    wfvae_jax.save_pretrained(path, params, config)
    return path


@pytest.fixture(scope="module")
def alex_weights(tmp_path_factory):
    """A random AlexNet LPIPS backbone in wfvae_jax's safetensors layout (seeded He init)."""
    rng = np.random.default_rng(2)
    specs = [(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]
    state = {}
    for (index, _), (o, i, k) in zip(lpips.TORCHVISION_CONVS["alex"], specs, strict=True):
        w = rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))
        state[f"features.{index}.weight"] = w.astype(np.float32)
        state[f"features.{index}.bias"] = (rng.standard_normal(o) * 0.01).astype(np.float32)
    path = tmp_path_factory.mktemp("lpips") / "alex.safetensors"
    params = lpips.backbone_from_torchvision("alex", state)
    save_file(flatten_tree(params), str(path), metadata={"format": lpips._FORMAT, "net": "alex"})
    return path


@pytest.fixture(scope="module")
def cli_run(ckpt, alex_weights, tmp_path_factory):
    """eval.py on 3 clips in batches of 2 (the last one padded), 9 frames, 32x32: direct vs
    Causal Cache (default chunks), LPIPS, arrays. Every model run in this module uses batches
    of 2, so each program compiles once."""
    out = tmp_path_factory.mktemp("eval_out")
    argv = ["--checkpoint", str(ckpt), "--videos", str(VIDEOS), "--num_frames", str(T)]
    argv += ["--resolution", str(RES), "--max_videos", "3", "--batch_size", "2"]
    argv += ["--causal_cache"]  # default chunks: 8 frames (encoder) / 2 latent frames (decoder)
    argv += ["--lpips_weights", str(alex_weights), "--no_fvd", "--save_arrays"]
    argv += ["--out", str(out), "--no_progress"]
    results = eval_main(argv)
    return results, out / "eval"


def _arrays(out_dir, name):
    with np.load(out_dir / "arrays" / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def _unit(x):
    return (np.clip(x.astype(np.float64), -1, 1) + 1) / 2


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_writes_report_and_files(cli_run):
    results, out_dir = cli_run
    on_disk = json.loads((out_dir / "metrics.json").read_text())
    assert on_disk["metrics"].keys() >= {"psnr", "ssim", "lpips", "fvd"}
    assert on_disk["metrics"]["fvd"] is None and "no_fvd" in on_disk["skipped_metrics"]["fvd"]
    assert "lpips" not in on_disk["skipped_metrics"]
    assert on_disk["data"]["num_videos"] == 3 and len(on_disk["videos"]) == 3
    assert on_disk["settings"]["clip_shape_thwc"] == [T, RES, RES, 3]
    md = (out_dir / "metrics.md").read_text()
    assert "| PSNR ↑ | SSIM ↑ | LPIPS ↓ | FVD ↓ |" in md and "Causal Cache" in md
    assert f"{results['metrics']['psnr']['mean']:.2f}" in md
    for row in on_disk["videos"]:
        assert count_frames(out_dir / "recon" / f"{row['name']}.mp4") == T
        with Image.open(out_dir / "strips" / f"{row['name']}.png") as im:
            # 3 rows (input | recon | error) of 32-pixel frames with 2-pixel gaps.
            assert im.size[1] == 3 * (RES + 2) + 2


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_clips_are_the_first_frames(cli_run):
    _, out_dir = cli_run
    for row in json.loads((out_dir / "metrics.json").read_text())["videos"]:
        expected = read_video(row["source"], T, resolution=RES)
        np.testing.assert_array_equal(_arrays(out_dir, row["name"])["input"], expected)


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_metrics_match_independent_computation(cli_run, alex_weights):
    results, out_dir = cli_run
    module, params = lpips.load_lpips("alex", alex_weights)
    for row in results["videos"]:
        a = _arrays(out_dir, row["name"])
        x, y = _unit(a["input"]), _unit(a["reconstruction"])
        mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
        assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), abs=1e-4)
        ssim_ref = [
            structural_similarity(
                x[t],
                y[t],
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                channel_axis=-1,
            )  # fmt: skip
            for t in range(T)
        ]
        assert row["ssim"] == pytest.approx(np.mean(ssim_ref), abs=1e-4)
        with jax.default_matmul_precision("highest"):
            d = module.apply(
                {"params": params}, np.clip(a["input"], -1, 1), np.clip(a["reconstruction"], -1, 1)
            )
        assert row["lpips"] == pytest.approx(float(np.mean(d)), rel=1e-4, abs=1e-6)
    for m in ("psnr", "ssim", "lpips"):
        per_video = [r[m] for r in results["videos"]]
        assert results["metrics"][m]["mean"] == pytest.approx(np.mean(per_video), rel=1e-12)


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_causal_cache_direct_equals_chunked(cli_run):
    results, out_dir = cli_run
    b = results["causal_cache"]
    assert (b["t_chunk_encoder"], b["t_chunk_decoder"]) == (8, 2)
    assert b["max_abs_diff"] <= 1e-5 and b["max_abs_diff_latent"] <= 1e-5
    diffs = []
    for row in results["videos"]:
        a = _arrays(out_dir, row["name"])
        diffs.append(np.max(np.abs(a["reconstruction"] - a["reconstruction_chunked"])))
    assert b["max_abs_diff"] == pytest.approx(max(diffs), rel=1e-6)
    for m in ("psnr", "ssim", "lpips"):
        assert b["chunked"][m]["mean"] == pytest.approx(b["direct"][m]["mean"], abs=1e-4)


def _stub_features(videos):
    """A cheap stand-in for I3D: per-channel mean and std of each video, (B, 6)."""
    v = np.asarray(videos, np.float64)
    return np.concatenate([v.mean(axis=(1, 2, 3)), v.std(axis=(1, 2, 3))], axis=1)


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_fvd_over_the_whole_set_and_lpips_skip(ckpt, tmp_path):
    params, config = wfvae_jax.load_pretrained(ckpt)
    clips = FolderClips(VIDEOS, T, RES, max_videos=3)
    opts = EvalOptions(save_arrays=True, num_visuals=0, batch_size=2)
    res = evaluate(params, config, clips, tmp_path, opts, fvd_feature_fn=_stub_features,
                   progress=False)  # fmt: skip
    arrays = [_arrays(tmp_path, r["name"]) for r in res["videos"]]
    real = _stub_features(np.stack([a["input"] for a in arrays]))
    fake = _stub_features(np.stack([a["reconstruction"] for a in arrays]))
    assert res["metrics"]["fvd"] == pytest.approx(fvd_from_features(real, fake), rel=1e-9)
    assert res["metrics"]["lpips"] is None and "alexnet" in res["skipped_metrics"]["lpips"]
    assert not (tmp_path / "recon").exists()  # num_visuals=0

    one = evaluate(params, config, FolderClips(VIDEOS, T, RES, max_videos=1), tmp_path / "one",
                   EvalOptions(num_visuals=0, batch_size=2), fvd_feature_fn=_stub_features,
                   progress=False)  # fmt: skip
    assert one["metrics"]["fvd"] is None and "at least 2" in one["skipped_metrics"]["fvd"]


def test_folder_clips_skips_short_videos_with_reason():
    clips = FolderClips(VIDEOS, 17, RES)  # tree_excerpt (10) and bikes_0200 (12) are too short
    names = [c.name for c in clips]
    assert names == ["bikes_0000", "bikes_0120", "sub__carphone_0000"]
    assert len(clips.skipped) == 2 and all("decodable frames" in r for r in clips.skipped.values())
    with pytest.raises(ValueError, match="nearest valid T is 9"):
        FolderClips(VIDEOS, 10, RES, config=wfvae_jax.WFVAEConfig())
    with pytest.raises(ValueError, match="nearest valid: 32 or 40"):
        FolderClips(VIDEOS, 9, 36)


def _fake_workdir(path, params, config):
    """A workdir as train.py writes it (wfvae_jax.train.checkpointing), minus the data item."""
    import optax
    import orbax.checkpoint as ocp

    from wfvae_jax.train.checkpointing import make_manager
    from wfvae_jax.train.state import TrainState

    ema = jax.tree.map(lambda a: a * 0.5, params)
    small = {"w": np.ones(3, np.float32)}  # stands in for the discriminator's trees
    state = TrainState(step=np.int32(5), rng=np.zeros(2, np.uint32), params=params,
                       ema_params=ema, opt_state=optax.adamw(1e-3).init(params),
                       disc_params=small, disc_batch_stats=small, disc_opt_state=small)  # fmt: skip
    meta = {"config": "{}", "model": config.to_dict(), "step": 5}
    with make_manager(str(path)) as manager:
        manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)))  # fmt: skip
        manager.wait_until_finished()
    return ema


@pytest.mark.slow  # runs the model (compiles on first use)
def test_workdir_loads_ema_by_default(ckpt, tmp_path):
    params, config = wfvae_jax.load_pretrained(ckpt)
    ema = _fake_workdir(tmp_path, params, config)
    got, got_config = load_train_checkpoint(tmp_path)
    assert got_config == config
    jax.tree.map(np.testing.assert_array_equal, got, ema)
    raw, _ = load_train_checkpoint(tmp_path, use_ema=False)
    jax.tree.map(np.testing.assert_array_equal, raw, params)
    res = eval_main(["--workdir", str(tmp_path), "--videos", str(VIDEOS), "--num_frames", str(T),
                     "--resolution", str(RES), "--max_videos", "1", "--batch_size", "2",
                     "--no_fvd", "--num_visuals", "0", "--no_progress"])  # fmt: skip
    assert "(step 5, EMA)" in res["model"]["source"]
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_channel_moments_match_numpy():
    rng = np.random.default_rng(0)
    # A large offset with a small spread: naive sums of squares would lose the variance.
    z = 1e4 + 1e-2 * rng.standard_normal((7, 3, 4, 5, 6)) * np.arange(1, 7)
    acc = latent_stats.ChannelMoments(6)
    for chunk in (z[:1], z[1:4], z[4:]):
        acc.update(chunk)
    assert acc.count == 7 * 3 * 4 * 5
    np.testing.assert_allclose(acc.mean, z.mean(axis=(0, 1, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(acc.std(), z.std(axis=(0, 1, 2, 3), ddof=1), rtol=1e-9)
    with pytest.raises(ValueError, match="latents"):
        acc.update(np.zeros((2, 5)))


@pytest.mark.slow  # runs the model (compiles on first use)
def test_latent_stats_write_config_roundtrip(ckpt, tmp_path):
    ckpt_copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, ckpt_copy)
    argv = ["--checkpoint", str(ckpt_copy), "--videos", str(VIDEOS), "--num_frames", str(T)]
    argv += ["--resolution", str(RES), "--max_videos", "3", "--batch_size", "2"]
    argv += ["--write_config", "--no_progress"]
    stats = latent_stats.main(argv)
    params, config = wfvae_jax.load_pretrained(ckpt_copy)
    # Independent: encode the same clips (pairs 0-1 and 1-2, to reuse the compiled batch of 2),
    # gather each clip's latents once and reduce with numpy.
    clips = np.stack([c.video for c in FolderClips(VIDEOS, T, RES, max_videos=3)])
    z01, z12 = (np.asarray(wfvae_jax.encode(params, clips[i : i + 2], config).mean, np.float64)
                for i in (0, 1))  # fmt: skip
    z = np.concatenate([z01, z12[1:]])
    np.testing.assert_allclose(stats["mean"], z.mean(axis=(0, 1, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["std"], z.std(axis=(0, 1, 2, 3), ddof=1), rtol=1e-5)
    assert len(config.scale) == len(config.shift) == config.latent_dim
    normalised = (z - np.asarray(config.shift)) * np.asarray(config.scale)
    np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(axis=(0, 1, 2, 3), ddof=1), 1, rtol=1e-5)
    assert json.loads((ckpt_copy / "latent_stats.json").read_text())["num_videos"] == 3
    with pytest.raises(UserError, match="--write_config needs --checkpoint"):
        latent_stats.main(["--workdir", str(tmp_path), "--videos", str(VIDEOS), "--write_config"])
    assert os.path.isfile(ckpt_copy / "config.json")


def test_tfds_clips_are_the_first_frames_of_each_record(tmp_path):
    from tests.test_data import _tfds_builder_class
    from wfvae_jax.commands.eval import build_parser, clips_from_args

    _tfds_builder_class()(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    args = build_parser().parse_args(
        ["--checkpoint", "unused", "--tfds", "wfvae_test_tiny_videos", "--split", "train",
         "--tfds_data_dir", str(tmp_path), "--num_frames", str(T), "--resolution", str(RES)]
    )  # fmt: skip
    clips = clips_from_args(args)
    got = [c.video for c in clips]
    # Record i holds frames i .. i + length - 1 of bikes_0000.mp4, lengths (20, 12, 4, 15);
    # tfds shuffles the records, so match each clip to its offset.
    expected = {o: read_video(VIDEOS / "bikes_0000.mp4", T, start=o, resolution=RES)
                for o in (0, 1, 2, 3)}  # fmt: skip
    offsets = sorted(o for v in got for o, e in expected.items() if np.array_equal(v, e))
    assert offsets == [0, 1, 3]
    assert list(clips.skipped.values()) == [
        f"too short: 4 decodable frames, a clip of {T} frames at frame_stride 1 spans {T}"
    ]


@pytest.mark.slow  # runs the model (compiles on first use)
def test_eval_metrics_run_in_bounded_chunks(ckpt, tmp_path, monkeypatch):
    """eval's PSNR and SSIM see at most the pixel budget per call (fails without chunking)."""
    import importlib

    common = importlib.import_module("wfvae_jax.metrics.frames")
    seen = []
    real = common.map_frame_chunks

    def spy(fn, x, y, frame_chunk):
        step = common.frames_per_call(np.shape(x), frame_chunk)
        seen.append(min(step, np.shape(x)[1]))
        return real(fn, x, y, frame_chunk)

    monkeypatch.setattr(common, "PIXELS_PER_CALL", 2 * 4 * RES * RES)  # batch 2: 4 frames
    for name in ("psnr", "ssim"):
        monkeypatch.setattr(importlib.import_module(f"wfvae_jax.metrics.{name}"),
                            "map_frame_chunks", spy)  # fmt: skip
    params, config = wfvae_jax.load_pretrained(ckpt)
    res = evaluate(params, config, FolderClips(VIDEOS, T, RES, max_videos=1), tmp_path,
                   EvalOptions(num_visuals=0, batch_size=2, fvd=False), progress=False)  # fmt: skip
    assert seen == [4, 4] and np.isfinite(res["metrics"]["ssim"]["mean"])
    assert "keeps" in res["videos"][0]["geometry"]  # the crop is reported per clip
