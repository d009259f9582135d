"""examples/latent_video_diffusion: trains on a handful of latents (the loss falls), samples
and decodes to mp4 + strip of the right shape; the solvers against a closed-form flow. The whole
path from real clips (encode-dataset, latent-stats, Causal Cache decoding) with a kill -9 and
rerun that ends where an uninterrupted run ends is a slow test."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wfvae_jax
from examples.latent_video_diffusion import config as config_lib
from examples.latent_video_diffusion import model as model_lib
from examples.latent_video_diffusion import sample as sample_lib
from examples.latent_video_diffusion import train as train_lib
from wfvae_jax.data import LatentSource
from wfvae_jax.data import latents as fmt
from wfvae_jax.io.video import count_frames

REPO = pathlib.Path(__file__).resolve().parents[1]
LATENT_SHAPE = (2, 4, 4, 8)  # t, h, w, C: clips of 5 frames at 32x32
TINY_RUN = [
    "--preset", "cpu",
    "--set", "model.width=32", "--set", "model.depth=1", "--set", "model.num_heads=2",
    "--set", "train.batch_size=4", "--set", "train.learning_rate=0.003",
    "--set", "train.warmup_steps=2", "--set", "train.log_every=2",
    "--set", "train.checkpoint_every=10", "--no_progress",
]  # fmt: skip


def write_latents(out: pathlib.Path, config: wfvae_jax.WFVAEConfig, num: int = 8) -> np.ndarray:
    """A finished latent dataset of ``num`` clips in the encode-dataset format: four smooth
    patterns (posterior means) with a small posterior std. Returns the means."""
    rng = np.random.default_rng(0)
    patterns = rng.normal(size=(4, *LATENT_SHAPE)).cumsum(axis=2).cumsum(axis=1)
    means = np.stack([patterns[i % 4] * 0.1 + 0.3 for i in range(num)]).astype(np.float32)
    out.mkdir(parents=True)
    writer = fmt.ShardWriter(out, 0)
    for i, mean in enumerate(means):
        latents = {"mean": mean, "logvar": np.full_like(mean, -8.0)}
        src = dict(video=f"clip{i}.mp4", start=0, frame_stride=1, fps=10.0, size=[32, 32])
        writer.write(fmt.encode_record(latents, src))
    marker = writer.commit({})
    fmt.write_manifest(
        out,
        {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "spec": {"encode": {"store": "mean_logvar"}},
            "spec_hash": "0" * 64,
            "model_config": config.to_dict(),
            "scale": None,  # what an encoding made before latent-stats records
            "shift": None,
            "latent_shape": list(LATENT_SHAPE),
            "complete": True,
            "shards": [{"file": marker["file"], "records": num}],
            "num_records": num,
        },
    )
    return means


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """(vae dir, latents dir): the tiny VAE with the latents' per-channel statistics, as
    ``wfvae latent-stats --write_config`` writes them."""
    root = tmp_path_factory.mktemp("ldm")
    params, config = tiny[0], tiny[1]
    means = write_latents(root / "latents", config)
    flat = means.reshape(-1, config.latent_dim)
    stats = config.replace(scale=tuple(1 / flat.std(0, ddof=1)), shift=tuple(flat.mean(0)))
    wfvae_jax.save_pretrained(root / "vae", params, stats)
    return root / "vae", root / "latents"


def _train(setup, workdir, steps, *extra):
    vae, latents = setup
    args = ["--vae", str(vae), "--latents", str(latents), "--workdir", str(workdir)]
    return train_lib.main([*args, *TINY_RUN, "--set", f"train.steps={steps}", *extra])


def test_trains_then_samples_and_decodes(setup, tmp_path):
    workdir = tmp_path / "run"
    result = _train(setup, workdir, 30)
    assert result["start_step"] == 0 and result["step"] == 30
    losses = [r["loss"] for r in result["losses"]]
    assert [r["step"] for r in result["losses"]] == list(range(2, 31, 2))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    assert (workdir / "loss.png").stat().st_size > 0
    # The same command again restores the last checkpoint and has nothing left to do (a
    # killed run's continuation is test_whole_path_from_clips_with_a_kill9).
    again = _train(setup, workdir, 30)
    assert again["start_step"] == 30 and again["losses"] == result["losses"]

    out = tmp_path / "samples"
    sets = ["sample.num_samples=2", "sample.num_steps=1", "sample.solver=euler", "sample.t_chunk=0"]
    args = ["--workdir", str(workdir), "--out", str(out)]
    result = sample_lib.main([*args, *(a for s in sets for a in ("--set", s))])
    assert result["step"] == 30
    video = result["video"]
    assert video.shape == (2, 5, 32, 32, 3) and np.all(np.isfinite(video))
    for i in range(2):
        assert count_frames(out / f"sample_{i:02d}.mp4") == 5
    assert (out / "samples.png").stat().st_size > 0


def test_other_settings_are_refused_in_a_used_workdir(setup, tmp_path):
    workdir = tmp_path / "run"
    (workdir).mkdir()
    run = {"config": config_lib.get_config("cpu").to_dict(), "vae": "x", "latents": "y"}
    (workdir / train_lib.RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"other settings \(.*latents.*model.width.*vae"):
        _train(setup, workdir, 2)


def test_placeholder_statistics_name_latent_stats(tiny, setup, tmp_path):
    with pytest.raises(ValueError, match="records no per-channel latent statistics.*latent-stats"):
        LatentSource(setup[1]).sample_transform()  # the manifest holds null scale/shift
    wfvae_jax.save_pretrained(tmp_path / "vae", tiny[0], tiny[1])  # 4-entry placeholder
    with pytest.raises(ValueError, match="wfvae latent-stats.*--write_config"):
        _train((tmp_path / "vae", setup[1]), tmp_path / "run", 2)


@pytest.mark.parametrize("solver", sample_lib.SOLVERS)
def test_solvers_follow_a_known_flow(solver):
    # dx/dt = -x from t=1 to t=0 gives x(0) = x(1) * e; Euler and Heun have known step errors.
    x1 = jnp.ones((1, 3))
    got = sample_lib.solve(lambda x, t: -x, x1, 4, solver)
    exact = np.e
    euler = (1 + 1 / 4) ** 4  # each step x -> x (1 + h) with h = 1/4
    heun = (1 + 1 / 4 + 1 / 32) ** 4  # each step x -> x (1 + h + h^2 / 2)
    np.testing.assert_allclose(got, np.full((1, 3), euler if solver == "euler" else heun), 1e-6)
    assert abs(heun - exact) < abs(euler - exact)


def _python(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, **kw)


def _check(*args: str) -> None:
    proc = _python(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_whole_path_from_clips_with_a_kill9(tiny, tmp_path):
    """videos -> encode-dataset -> latent-stats -> train (killed with SIGKILL after its first
    checkpoint, then rerun) -> sample with Causal Cache decoding. The resumed run ends with the
    same parameters as an uninterrupted one."""
    vae, latents = tmp_path / "vae", tmp_path / "latents"
    wfvae_jax.save_pretrained(vae, tiny[0], tiny[1])
    clips = ["--videos", str(REPO / "tests" / "data" / "videos"), "--num_frames", "9"]
    _check(
        "-m",
        "wfvae_jax",
        "encode-dataset",
        "--checkpoint",
        str(vae),
        *clips,
        "--resolution",
        "32",
        "--clips_per_video",
        "2",
        "--out",
        str(latents),
        "--no_progress",
    )
    _check("-m", "wfvae_jax", "latent-stats", "--checkpoint", str(vae), *clips,
           "--resolution", "32", "--sample", "--write_config", "--no_progress")  # fmt: skip
    assert len(wfvae_jax.load_pretrained(vae, part="decoder")[1].scale) == 8

    def command(workdir):
        paths = ["--vae", str(vae), "--latents", str(latents), "--workdir", str(workdir)]
        return ["-m", "examples.latent_video_diffusion.train", *paths, *TINY_RUN, "--set",
                "train.steps=30"]  # fmt: skip

    killed = tmp_path / "killed"
    proc = _python(*command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not (killed / "checkpoints" / "10").is_dir() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _check(*command(killed))
    _check(*command(tmp_path / "straight"))

    cfg = config_lib.get_config("cpu")
    config_lib.apply_overrides(cfg, [a for a in TINY_RUN if "=" in a])
    net = model_lib.build_model(cfg, 8)
    shape = tuple(json.loads((killed / train_lib.RUN_FILE).read_text())["latent_shape"])
    a, step_a = sample_lib.load_params(str(killed), cfg, net, shape)
    b, step_b = sample_lib.load_params(str(tmp_path / "straight"), cfg, net, shape)
    assert step_a == step_b == 30
    jax.tree.map(np.testing.assert_array_equal, a, b)

    out = tmp_path / "samples"
    _check("-m", "examples.latent_video_diffusion.sample", "--workdir", str(killed), "--out",
           str(out), "--set", "sample.num_samples=2", "--set", "sample.t_chunk=1")  # fmt: skip
    for i in range(2):
        assert count_frames(out / f"sample_{i:02d}.mp4") == 9
