"""Training system: train steps, resume, non-finite stop, and sharded == single-device steps.

A tiny WF-VAE (base 8, no attention, one resblock per stage) on 32x32, 5-frame clips of
tests/data/videos keeps compilation short; every test shares one compiled set of steps.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from wfvae_jax.inference.sharding import make_mesh
from wfvae_jax.train import checkpointing, loop
from wfvae_jax.train import mesh as mesh_lib
from wfvae_jax.train.step import build_train_steps

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"
MODEL_OVERRIDES = dict(
    base_channels=8,
    encoder_energy_flow_hidden_size=8,
    decoder_energy_flow_hidden_size=8,
    latent_dim=4,
    encoder_num_resblocks=1,
    decoder_num_resblocks=1,
    use_attention=False,
)


def tiny_config():
    c = default.get_config()
    c.model.name = "tiny"
    c.model.overrides.update(MODEL_OVERRIDES)
    c.data.train_dir = str(VIDEOS)
    c.data.num_frames = 5
    c.data.resolution = 32
    c.data.batch_size = 2
    c.eval.files = [str(VIDEOS / "tree_excerpt.avi")]
    c.eval.num_frames = 5
    c.eval.resolution = 32
    c.eval.every_steps = 0
    c.loss.perceptual_weight = 0.0
    c.loss.disc_num_layers = 2
    c.disc_ndf = 4
    c.optim.learning_rate = 1e-3
    c.log_every = 1
    c.checkpoint_every = 2
    c.compilation_cache = False
    return c


def _video(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, 5, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def steps():
    cfg = loop.step_config(tiny_config())
    return cfg, build_train_steps(cfg, make_mesh(fsdp=1))


def test_generator_then_discriminator_step(steps):
    cfg, s = steps
    state0 = s.init(jax.random.key_data(jax.random.key(0)))
    before = jax.device_get(state0)  # the steps donate their input state
    video = jax.device_put(jnp.asarray(_video()), s.batch_sharding)

    state1, m1 = s.generator(state0, video, None)
    after = jax.device_get(state1)
    assert int(after.step) == 1
    assert all(np.isfinite(float(v)) for v in m1.values())
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), after.params, before.params)
    assert max(jax.tree.leaves(moved)) > 1e-4  # lr 1e-3 Adam moves every parameter ~1e-3
    # EMA after one step: d * params_0 + (1 - d) * params_1 (exact identity).
    d = cfg.ema_decay
    expected = jax.tree.map(lambda p0, p1: d * p0 + (1 - d) * p1, before.params, after.params)
    for e, a in zip(jax.tree.leaves(expected), jax.tree.leaves(after.ema_params), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
    # A generator step leaves the discriminator's weights alone.
    jax.tree.map(np.testing.assert_array_equal, after.disc_params, before.disc_params)
    # disc_start 0: step 1 is a discriminator step; it leaves the generator alone.
    state2, m2 = s.discriminator(state1, video, None)
    after2 = jax.device_get(state2)
    assert set(m2) >= {"train/disc_loss", "train/logits_real", "train/logits_fake"}
    jax.tree.map(np.testing.assert_array_equal, after2.params, after.params)
    d_moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))), after2.disc_params, after.disc_params
    )
    assert max(jax.tree.leaves(d_moved)) > 1e-4
    # The adaptive weight is active from step 0 and the logged loss adds up (reference l.168).
    total = m1["train/nll_loss"] + 1e-6 * m1["train/kl_loss"] + 0.1 * m1["train/wl_loss"]
    total += m1["train/d_weight"] * m1["train/g_loss"]
    np.testing.assert_allclose(float(m1["train/total_loss"]), float(total), rtol=1e-5)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    config = tiny_config()
    config.num_steps = 4
    full = loop.train_and_evaluate(config, str(tmp_path / "full"))
    config.num_steps = 2
    first = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    config.num_steps = 4
    second = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert sorted(first["losses"]) == [0, 1] and sorted(second["losses"]) == [2, 3]
    resumed = {**first["losses"], **second["losses"]}
    for step in range(4):
        for key, value in full["losses"][step].items():
            np.testing.assert_allclose(
                resumed[step][key], value, rtol=1e-6, err_msg=f"{step} {key}"
            )
    # Steps 0 and 2 are generator steps, 1 and 3 discriminator steps (disc_start 0).
    assert "train/total_loss" in full["losses"][2] and "train/disc_loss" in full["losses"][3]
    assert full["export"] and os.path.isfile(os.path.join(full["export"], "config.json"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config()
    config.num_steps = 2
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    saved = checkpointing.make_manager(workdir)
    assert saved.all_steps() == [2]
    params_file_times = {
        p: p.stat().st_mtime_ns for p in pathlib.Path(workdir).rglob("*") if p.is_file()
    }

    real = mesh_lib.global_batch
    monkeypatch.setattr(
        loop.mesh_lib, "global_batch", lambda b, sh: real(np.full_like(b, np.nan), sh)
    )
    config.num_steps = 4
    config.log_every = 100  # the check must also guard the checkpoint at step 4
    with pytest.raises(loop.NonFiniteLossError, match="step 2 in"):
        loop.train_and_evaluate(config, workdir)
    assert checkpointing.make_manager(workdir).all_steps() == [2]
    for p, t in params_file_times.items():
        if "checkpoints" in str(p):
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"


def test_lpips_without_weights_is_a_clear_error(tmp_path):
    config = tiny_config()
    config.loss.perceptual_weight = 0.1
    with pytest.raises(ValueError, match="perceptual"):
        loop.train_and_evaluate(config, str(tmp_path / "w"))


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state(steps):
    cfg, s32 = steps
    config = tiny_config()
    config.compute_dtype = "bfloat16"
    s16 = build_train_steps(loop.step_config(config), make_mesh(fsdp=1))
    init = jax.device_get(s32.init(jax.random.key_data(jax.random.key(0))))
    video = jnp.asarray(_video())
    out = {}
    for name, s in (("f32", s32), ("bf16", s16)):
        state = jax.device_put(init, s.state_sharding)
        state, m = s.generator(state, jax.device_put(video, s.batch_sharding), None)
        out[name] = (jax.device_get(state), {k: float(v) for k, v in m.items()})
    state16, m16 = out["bf16"]
    dtypes = {x.dtype for x in jax.tree.leaves((state16.params, state16.ema_params))}
    assert dtypes == {np.dtype(np.float32)}
    # bf16 has 8 mantissa bits: the reconstruction loss agrees to about 1%.
    np.testing.assert_allclose(m16["train/nll_loss"], out["f32"][1]["train/nll_loss"], rtol=0.02)
    assert all(np.isfinite(v) for v in m16.values())


_SHARDED = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, sys.argv[1])
from tests.test_train import tiny_config, _video
from wfvae_jax.train import loop
from wfvae_jax.inference.sharding import make_mesh
from wfvae_jax.train.step import build_train_steps

assert jax.device_count() == 2, jax.devices()
config = tiny_config()
# Adam's g / (|g| + eps) turns float noise in gradients that are zero in exact arithmetic (conv
# biases before a norm layer) into updates of up to lr; with eps = 1 the update is smooth in g,
# so parameters compare tightly while the logged losses and gradient norms catch any real
# difference in the computation.
config.optim.eps = 1.0
cfg = loop.step_config(config)
devs = jax.devices()
single_mesh = make_mesh(fsdp=1, devices=devs[:1])
key = jax.random.key_data(jax.random.key(0))
init = jax.device_get(build_train_steps(cfg, single_mesh).init(key))

def run(mesh, parallelism, video):
    s = build_train_steps(cfg, mesh, parallelism)
    state = jax.device_put(init, s.state_sharding)
    state, m = s.generator(state, jax.device_put(jnp.asarray(video), s.batch_sharding), None)
    return jax.device_get(state.params), {k: float(v) for k, v in m.items()}

def diff(a, b):
    pa, ma = a
    pb, mb = b
    dp = max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), pa, pb)))
    dm = max(abs(ma[k] - mb[k]) / max(abs(mb[k]), 1e-6) for k in mb)
    return dp, dm

video = _video(2)
data2 = make_mesh(fsdp=1, devices=devs)
single = run(single_mesh, "gspmd", video)
out = {
    "data2": diff(run(data2, "gspmd", video), single),
    "fsdp2": diff(run(make_mesh(fsdp=2, devices=devs), "gspmd", video), single),
}
# shard_map = per-device DDP: per-device BatchNorm statistics and adaptive weight, and every
# device draws the same noise (as every reference rank does). With the same video on both
# devices it must equal one device's step on that video alone.
same = np.concatenate([video[:1], video[:1]])
out["shard_map"] = diff(run(data2, "shard_map", same), run(single_mesh, "gspmd", video[:1]))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_steps_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED, str(REPO)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    for name, (param_diff, metric_rel) in result.items():
        # One step moves parameters by up to lr = 1e-3; 1e-6 catches any real mismatch.
        assert param_diff < 1e-6, (name, param_diff)
        assert metric_rel < 1e-4, (name, metric_rel)


def test_fsdp_spec_shards_largest_divisible_dim():
    assert mesh_lib.fsdp_spec((3, 3, 64, 128), 4) == jax.sharding.PartitionSpec(
        None, None, None, "fsdp"
    )
    assert mesh_lib.fsdp_spec((3, 3, 6, 5), 4) == jax.sharding.PartitionSpec()  # too small
    assert mesh_lib.fsdp_spec((3, 3, 64, 130), 4) == jax.sharding.PartitionSpec(
        None, None, "fsdp", None
    )
    assert mesh_lib.fsdp_spec((128, 128), 1) == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError, match="divide"):
        make_mesh(fsdp=3)


def test_optimizer_is_adamw_with_paper_values():
    cfg = loop.step_config(default.get_config())
    assert (cfg.optim.learning_rate, cfg.optim.b1, cfg.optim.b2) == (1e-5, 0.9, 0.999)
    assert cfg.optim.weight_decay == 1e-4 and cfg.ema_decay == 0.999
    from wfvae_jax.train.state import make_optimizer

    # PyTorch AdamW's first step: p -= lr * (g / (|g| + eps) + wd * p) (bias-corrected m = g,
    # v = g^2), written out by hand.
    lr, wd, eps = cfg.optim.learning_rate, cfg.optim.weight_decay, cfg.optim.eps
    tx = make_optimizer(cfg.optim)
    p = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    g = {"w": jnp.array([0.5, -1.0, 2e-9, 0.0])}
    updates, _ = tx.update(g, tx.init(p), p)
    expected = -lr * (g["w"] / (jnp.abs(g["w"]) + eps) + wd * p["w"])
    np.testing.assert_allclose(updates["w"], expected, rtol=2e-5)


def test_stage_configs_follow_table7():
    from configs import cpu_small, stage1, stage2, stage3

    s1, s2, s3 = stage1.get_config(), stage2.get_config(), stage3.get_config()
    for c in (s1, s2, s3):
        cfg = loop.step_config(c)
        assert (c.data.resolution, c.data.batch_size, cfg.optim.learning_rate) == (256, 8, 1e-5)
        assert (cfg.loss.wavelet_weight, cfg.loss.kl_weight, cfg.ema_decay) == (0.1, 1e-6, 0.999)
        assert cfg.loss.loss_type == "l1" and cfg.loss.disc_start == 0
    assert (s1.num_steps, s1.data.num_frames, s1.data.frame_stride) == (800_000, 25, 1)
    assert (s2.num_steps, s2.data.num_frames, s2.data.frame_stride) == (200_000, 49, 2)
    assert (s3.num_steps, s3.data.num_frames, s3.data.frame_stride) == (200_000, 49, 2)
    assert [c.loss.perceptual_weight for c in (s1, s2, s3)] == [1.0, 1.0, 0.1]
    small = cpu_small.get_config()
    assert small.loss.perceptual_weight == 0.0 and small.model.name == "tiny"
    # Held-out honesty: neither the eval video nor its re-encoded copy is a training file.
    from wfvae_jax.data import VideoFolderSource

    if os.path.isdir(small.data.train_dir):
        exclude = [*small.data.exclude, *small.eval.files]
        src = VideoFolderSource(small.data.train_dir, exclude=exclude)
        names = {os.path.basename(p) for p in src.paths}
        assert not names & {"carphone_pristine.mp4", "carphone_distorted.mp4"}
        assert names  # something is left to train on
