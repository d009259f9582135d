"""encode_dataset + LatentSource: records equal ``wfvae_jax.encode`` of the same clips, skips are
counted, a kill -9 resumes to byte-identical shards, other encodings are refused, TFDS input.

The inputs are tests/data/videos plus an unreadable and a too-short file; with
``videos_per_shard=2`` the 7 inputs make 4 shards, one of them empty (both its inputs skipped):
  shard 0: bikes_0000.mp4 (20 frames: 2 clips), bikes_0120.mp4 (20: 2 clips)
  shard 1: junk.mp4 (unreadable), short.mp4 (3 frames: too short)
  shard 2: sub/bikes_0200.mov (12: 1 clip), sub/carphone_0000.mkv (17: 1 clip)
  shard 3: tree_excerpt.avi (10: 1 clip)
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import av
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wfvae_jax
from tests.conftest import TINY
from wfvae_jax.commands.encode_dataset import main
from wfvae_jax.commands.errors import run
from wfvae_jax.data import LatentSource, find_videos
from wfvae_jax.data import latents as fmt
from wfvae_jax.data.tfds import TfdsVideoSource
from wfvae_jax.data.video_source import VideoFiles
from wfvae_jax.encode_dataset import ClipSpec, EncodeOptions, encode_dataset
from wfvae_jax.io.convert import load_reference
from wfvae_jax.io.video import count_frames, read_video, resize_and_crop, write_video

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"
CHILD = REPO / "tests" / "encode_dataset_child.py"
SPEC = ClipSpec(num_frames=9, resolution=(32, 48), frame_stride=1, clips_per_video=2)
OPTIONS = EncodeOptions(videos_per_shard=2, worker_count=0, progress=False)
SHARDS = [4, 0, 2, 1]  # records per shard (see the module doc)


@pytest.fixture(scope="module")
def model():
    return load_reference(TINY)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("videos")
    shutil.copytree(VIDEOS, root, dirs_exist_ok=True)
    (root / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_video(root / "short.mp4", read_video(root / "bikes_0000.mp4", 3), fps=25)
    return str(root)


@pytest.fixture(scope="module")
def reference(model, video_dir, tmp_path_factory):
    """An uninterrupted single-process run: (out, summary)."""
    params, config = model
    out = str(tmp_path_factory.mktemp("reference"))
    summary = encode_dataset(params, config, VideoFiles(video_dir), out, SPEC, OPTIONS)
    return out, summary


def _expected_clips(root: str, spec: ClipSpec) -> list[tuple[str, int]]:
    """(video, start) of every clip, from decoded frame counts: consecutive strided windows."""
    clips = []
    for rel in find_videos(root):
        try:
            frames = count_frames(os.path.join(root, rel))
        except ValueError:
            continue
        strided = (frames - 1) // spec.frame_stride + 1
        for k in range(min(spec.clips_per_video, strided // spec.num_frames)):
            clips.append((rel, k * spec.num_frames * spec.frame_stride))
    return clips


def _clip(root: str, item: dict, spec: ClipSpec) -> np.ndarray:
    return read_video(
        os.path.join(root, item["video"]),
        spec.num_frames,
        frame_stride=spec.frame_stride,
        start=int(item["start"]),
        resolution=spec.resolution,
        crop="center",
    )


def test_records_equal_encode_of_each_clip(model, video_dir, reference):
    params, config = model
    out, summary = reference
    source = LatentSource(out)
    items = [source[i] for i in range(len(source))]
    assert [(it["video"], it["start"]) for it in items] == _expected_clips(video_dir, SPEC)
    assert len(items) == sum(SHARDS) == summary["num_records"] == summary["records_written"]
    shape = (config.latent_frames(SPEC.num_frames), 32 // 8, 48 // 8, config.latent_dim)
    for it in items:
        post = wfvae_jax.encode(params, _clip(video_dir, it, SPEC)[None], config)
        assert it["mean"].shape == it["logvar"].shape == shape
        assert it["mean"].dtype == np.float32
        np.testing.assert_allclose(it["mean"], post.mean[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(it["logvar"], post.logvar[0], rtol=0, atol=1e-5)
        with av.open(os.path.join(video_dir, it["video"])) as c:
            stream = c.streams.video[0]
            assert list(it["size"]) == [stream.codec_context.height, stream.codec_context.width]
            assert it["fps"] == pytest.approx(float(stream.average_rate))
        assert it["frame_stride"] == 1
    m = source.manifest
    assert m["complete"] and m["num_shards"] == 4 and source.latent_shape == shape
    assert [s["records"] for s in m["shards"]] == SHARDS
    assert {s["video"]: s["kind"] for s in m["skipped"]} == {
        "junk.mp4": "unreadable",
        "short.mp4": "too_short",
    }
    assert m["skipped_counts"] == {"unreadable": 1, "too_short": 1}
    assert "3 decodable frames" in next(
        s["reason"] for s in m["skipped"] if s["kind"] != "unreadable"
    )
    # The reference's 4-entry placeholder scale/shift, broadcast to the 8 latent channels.
    assert m["scale"] == [0.18215] * 8 and m["shift"] == [0.0] * 8
    assert m["spec"]["model"]["config"]["latent_dim"] == 8 and m["spec"]["clips"]["num_frames"] == 9
    assert sorted(os.listdir(out)) == sorted(
        [fmt.MANIFEST]
        + [fmt.shard_name(s) for s in range(4)]
        + [fmt.marker_name(s) for s in range(4)]
    )


def test_sample_store_bfloat16_with_stride(model, video_dir, tmp_path):
    """``store="sample"``: each latent is the posterior draw under the clip's own key."""
    params, config = model
    spec = ClipSpec(num_frames=5, resolution=(32, 48), frame_stride=2, clips_per_video=2)
    options = dataclasses.replace(
        OPTIONS, store="sample", storage_dtype="bfloat16", seed=3, batch_size=2
    )
    encode_dataset(params, config, VideoFiles(video_dir), str(tmp_path), spec, options)
    source = LatentSource(tmp_path)
    items = [source[i] for i in range(len(source))]
    assert [(it["video"], it["start"]) for it in items] == _expected_clips(video_dir, spec)
    assert ("bikes_0000.mp4", 10) in [(it["video"], it["start"]) for it in items]
    for it in items:
        assert set(it) == {"latent", "video", "start", "frame_stride", "fps", "size"}
        post = wfvae_jax.encode(params, _clip(video_dir, it, spec)[None], config)
        mean, std = np.asarray(post.mean[0]), np.exp(0.5 * np.asarray(post.logvar[0]))
        key = fmt.sample_key_data(3, it["video"], it["start"])
        eps = jax.random.normal(jax.random.wrap_key_data(key, impl="threefry2x32"), mean.shape)
        assert it["latent"].dtype == np.float32  # bfloat16 on disk, float32 when read
        np.testing.assert_allclose(it["latent"], mean + std * np.asarray(eps), rtol=1e-2, atol=1e-2)
        other = jax.random.normal(
            jax.random.wrap_key_data(key + 1, impl="threefry2x32"), mean.shape
        )
        assert np.abs(it["latent"] - (mean + std * np.asarray(other))).max() > 0.1


def test_sample_transform_and_jitted_step(reference):
    source = LatentSource(reference[0])
    item = source[0]
    eps = np.random.default_rng(0).standard_normal(item["mean"].shape, dtype=np.float32)
    z = item["mean"] + np.exp(0.5 * item["logvar"]) * eps
    got = source.sample_transform().random_map(item, np.random.default_rng(0))
    np.testing.assert_allclose(got["latent"], (z - source.shift) * source.scale, rtol=1e-6)
    assert got["video"] == item["video"] and got["start"] == item["start"]
    mode = source.sample_transform(sample=False).random_map(item, np.random.default_rng(0))
    np.testing.assert_allclose(mode["latent"], (item["mean"] - 0.0) * 0.18215, rtol=1e-6)

    def losses(seed):  # the README example
        loader = grain.DataLoader(
            data_source=source,
            sampler=grain.samplers.IndexSampler(len(source), shuffle=True, seed=seed, num_epochs=1),
            operations=[source.sample_transform(), grain.transforms.Batch(2, drop_remainder=True)],
        )

        @jax.jit
        def train_step(z):
            return jnp.mean(jnp.square(z))

        out = []
        for batch in loader:
            assert batch["latent"].shape == (2, *source.latent_shape)
            out.append(float(train_step(batch["latent"])))
        return out

    first = losses(0)
    assert len(first) == len(source) // 2 and all(np.isfinite(first))
    assert losses(0) == first and losses(1) != first


def test_refuses_another_encoding_unless_overwrite(model, video_dir, reference, tmp_path, capsys):
    params, config = model
    out = str(tmp_path / "out")
    shutil.copytree(reference[0], out)
    inputs = VideoFiles(video_dir)
    one_clip = dataclasses.replace(SPEC, clips_per_video=1)
    with pytest.raises(ValueError, match=r"different encoding \(differs in: clips.clips_per_video"):
        encode_dataset(params, config, inputs, out, one_clip, OPTIONS)
    other = jax.tree.map(lambda p: p * 1.01, params)
    with pytest.raises(ValueError, match="model.params_hash"):
        encode_dataset(other, config, inputs, out, SPEC, OPTIONS)
    # Without the manifest (e.g. another host's disk) the shard markers still refuse.
    os.remove(os.path.join(out, fmt.MANIFEST))
    with pytest.raises(ValueError, match="holds shard 0 of a different encoding"):
        encode_dataset(params, config, inputs, out, one_clip, OPTIONS)
    # The command line: one error line, a hint to --overwrite, exit 2.
    ckpt = str(tmp_path / "ckpt")
    wfvae_jax.save_pretrained(ckpt, params, config)
    argv = [
        "--checkpoint", ckpt, "--videos", video_dir, "--out", out, "--num_frames", "9",
        "--resolution", "32x48", "--clips_per_video", "1", "--videos_per_shard", "2",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        run(main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--overwrite" in err[-1]
    with pytest.raises(SystemExit) as e:
        run(main, [*argv, "--num_frames", "8"])
    assert e.value.code == 2 and "nearest valid T is 9" in capsys.readouterr().err
    overwrite = dataclasses.replace(OPTIONS, overwrite=True)
    summary = encode_dataset(params, config, inputs, out, one_clip, overwrite)
    assert (
        summary["num_records"] == 5
        and LatentSource(out).manifest["spec"]["clips"]["clips_per_video"] == 1
    )


def _child_env(tmp: pathlib.Path) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp / "xla_cache")
    env.pop("XLA_FLAGS", None)
    return env


def _run_until_stopped(cmd, env, stop_at, stop_file) -> None:
    """Runs the child until it reaches ``stop_at``, then kills its process group with SIGKILL."""
    env = dict(env, WFVAE_TEST_STOP_AT=stop_at, WFVAE_TEST_STOP_FILE=str(stop_file))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not stop_file.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"child ended with {proc.returncode}: {proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("child never reached " + stop_at)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the child and its grain workers
    assert proc.wait(60) == -signal.SIGKILL
    proc.stderr.close()
    stop_file.unlink()


@pytest.mark.slow
def test_kill9_then_resume_gives_identical_shards(model, video_dir, reference, tmp_path):
    params, config = model
    ckpt = tmp_path / "ckpt"
    wfvae_jax.save_pretrained(ckpt, params, config)
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(CHILD), "--checkpoint", str(ckpt), "--videos", video_dir,
        "--out", str(out), "--num_frames", "9", "--resolution", "32x48",
        "--clips_per_video", "2", "--videos_per_shard", "2", "--no_progress",
    ]  # fmt: skip
    env, stop = _child_env(tmp_path), tmp_path / "stopped"

    # 1. Killed right after its 5th record: the first of shard 2 (shards 0 and 1 are done).
    _run_until_stopped([*cmd, "--worker_count", "0"], env, "record:5", stop)
    left = sorted(os.listdir(out))
    print("after kill -9 at record 5:", left)
    assert left == [
        "latents-00000.array_record",
        "latents-00000.json",
        "latents-00001.array_record",
        "latents-00001.json",
        "latents-00002.array_record.tmp",
        "manifest.json",
    ]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(ValueError, match="has not finished"):
        LatentSource(out)

    # 2. Resumed with grain workers, killed between shard 3's data rename and its marker.
    _run_until_stopped([*cmd, "--worker_count", "2"], env, "marker:2", stop)
    left = sorted(os.listdir(out))
    print("after kill -9 before shard 3's marker:", left)
    assert "latents-00003.array_record" in left and "latents-00003.json" not in left
    assert "latents-00002.json" in left and not any(f.endswith(".tmp") for f in left)

    # 3. Runs to the end: redoes only shard 3 (1 record).
    done = subprocess.run(
        [*cmd, "--worker_count", "2"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(1 encoded now" in done.stdout
    ref = reference[0]
    for s in range(4):
        assert filecmp.cmp(out / fmt.shard_name(s), os.path.join(ref, fmt.shard_name(s)), False)
    resumed, first = LatentSource(out).manifest, LatentSource(ref).manifest
    assert resumed["shards"] == first["shards"] and resumed["spec_hash"] == first["spec_hash"]
    assert resumed["skipped"] == first["skipped"]
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    from tests.test_data import _tfds_builder_class

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    _tfds_builder_class()(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_input(model, tfds_dir, tmp_path):
    from tests.test_data import TFDS_LENGTHS

    params, config = model
    inputs = TfdsVideoSource("wfvae_test_tiny_videos", "train", tfds_dir)
    encode_dataset(params, config, inputs, str(tmp_path), SPEC, OPTIONS)
    source = LatentSource(tmp_path)
    lengths = [len(inputs[i]["video"]) for i in range(len(inputs))]
    assert sorted(lengths) == sorted(TFDS_LENGTHS)  # tfds stores records in its own order
    expected = [
        (f"tfds:wfvae_test_tiny_videos/train[{i}]", 9 * k)
        for i, n in enumerate(lengths)
        for k in range(min(2, n // 9))
    ]
    items = [source[i] for i in range(len(source))]
    assert [(it["video"], it["start"]) for it in items] == expected
    short = lengths.index(4)
    assert source.manifest["skipped"] == [
        {
            "video": f"tfds:wfvae_test_tiny_videos/train[{short}]",
            "kind": "too_short",
            "reason": "too short: 4 decodable frames, a clip of 9 frames at frame_stride 1 spans 9",
        }
    ]
    for it in items:
        i = int(it["video"].split("[")[1][:-1])
        window = inputs[i]["video"][it["start"] : it["start"] + 9]
        post = wfvae_jax.encode(params, resize_and_crop(window, (32, 48))[None], config)
        np.testing.assert_allclose(it["mean"], post.mean[0], rtol=0, atol=1e-5)
        assert it["fps"] == 0.0 and list(it["size"]) == [68, 160]


def test_mesh_data_and_space_equals_single_device(model, video_dir, reference, tmp_path):
    """``--mesh data=2,space=2`` on 4 CPU devices (clips over "data", each clip's height over
    "space") writes the records of the single-device run (to float tolerance: the sharded
    convolutions sum in another order)."""
    params, config = model
    ckpt = tmp_path / "ckpt"
    wfvae_jax.save_pretrained(ckpt, params, config)
    out = tmp_path / "out"
    env = dict(_child_env(tmp_path), XLA_FLAGS="--xla_force_host_platform_device_count=4")
    cmd = [
        sys.executable, "-m", "wfvae_jax", "encode-dataset", "--checkpoint", str(ckpt),
        "--videos", video_dir, "--out", str(out), "--num_frames", "9", "--resolution", "32x48",
        "--clips_per_video", "2", "--videos_per_shard", "2", "--worker_count", "0",
        "--no_progress", "--mesh", "data=2,space=2",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded, single = LatentSource(out), LatentSource(reference[0])
    assert sharded.manifest["run"]["mesh"] == {"data": 2, "space": 2}
    assert len(sharded) == len(single) == sum(SHARDS)
    for i in range(len(single)):
        a, b = sharded[i], single[i]
        assert (a["video"], a["start"]) == (b["video"], b["start"])
        np.testing.assert_allclose(a["mean"], b["mean"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(a["logvar"], b["logvar"], rtol=0, atol=1e-5)

    # 3 devices cannot hold data*space = 4; an H that does not split is named.
    bad = subprocess.run(
        [*cmd[:-1], "data=1,space=3", "--overwrite"], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --mesh data=1,space=3 uses 3")
