"""Two processes on localhost (CPU, gloo collectives) against one: encode_dataset and train.py.

Each process is started with ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID`` (read by ``inference.multihost.initialize`` behind ``--multihost``) and its
own ``XLA_FLAGS=--xla_force_host_platform_device_count``. The single-process runs use the same
number of clips (or videos) per device, so every device computes on the same shapes.
"""

from __future__ import annotations

import filecmp
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import wfvae_jax
from tests.conftest import TINY
from wfvae_jax.data import LatentSource
from wfvae_jax.data import latents as fmt
from wfvae_jax.io.convert import load_reference

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"
TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: pathlib.Path, devices: int, process: tuple[int, int, int] | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp / "xla_cache")
    if process is not None:
        port, index, count = process
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(count),
            JAX_PROCESS_ID=str(index),
        )
    return env


def _run(cmd: list[str], tmp: pathlib.Path, devices: int, processes: int) -> list[str]:
    """Runs ``cmd`` as one process, or as ``processes`` coordinated ones; returns their stdout."""
    if processes == 1:
        envs = [_env(tmp, devices, None)]
    else:
        port = _free_port()
        envs = [_env(tmp, devices, (port, i, processes)) for i in range(processes)]
        cmd = [*cmd, "--multihost"]
    procs = [
        subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for e in envs
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT_S)
            assert p.returncode == 0, f"exit {p.returncode}:\n{stderr[-4000:]}"
            outs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("ckpt"))
    wfvae_jax.save_pretrained(path, *load_reference(TINY))
    return path


@pytest.mark.slow
def test_encode_two_processes_equal_one(ckpt, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(VIDEOS, videos)
    (videos / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    # 6 inputs, one per shard: process 0 writes shards 0, 2, 4 (2 + 0 + 1 clips: junk.mp4 is
    # skipped) in 2 steps, process 1 shards 1, 3, 5 (2 + 1 + 1) in 3, so process 0 takes its
    # last step with an empty batch.
    cmd = [
        sys.executable, "-m", "wfvae_jax", "encode-dataset", "--checkpoint", ckpt,
        "--videos", str(videos), "--num_frames", "9", "--resolution", "32x48",
        "--clips_per_video", "2", "--videos_per_shard", "1", "--worker_count", "0",
        "--no_progress",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*cmd, "--out", str(one), "--batch_size", "2"], tmp_path, devices=2, processes=1)
    _run([*cmd, "--out", str(two), "--batch_size", "4"], tmp_path, devices=2, processes=2)

    m1, m2 = LatentSource(one).manifest, LatentSource(two).manifest
    mesh = {"data": 4, "space": 1}, {"data": 2, "space": 1}  # the default --mesh: data only
    assert m2["run"] == {"processes": 2, "devices": 4, "batch_size": 4, "mesh": mesh[0]}
    assert m1["run"] == {"processes": 1, "devices": 2, "batch_size": 2, "mesh": mesh[1]}
    assert m1["spec_hash"] == m2["spec_hash"] and m1["num_records"] == m2["num_records"] == 7
    assert m1["shards"] == m2["shards"] and m1["skipped"] == m2["skipped"]
    assert [s["records"] for s in m2["shards"]] == [2, 2, 0, 1, 1, 1]
    for s in range(m1["num_shards"]):  # byte-identical shards, so the same records
        assert filecmp.cmp(one / fmt.shard_name(s), two / fmt.shard_name(s), shallow=False)
    assert sorted(os.listdir(one)) == sorted(os.listdir(two))


@pytest.mark.slow
def test_train_two_processes_equal_one(tmp_path):
    """``train.py --multihost``: 3 steps (generator, discriminator, generator) on the same global
    batches give the same losses and EMA parameters as one process with the same 2 devices."""
    child = str(REPO / "tests" / "multihost_train_child.py")
    cmd = [sys.executable, child, "--config", child]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*cmd, "--workdir", str(one)], tmp_path, devices=2, processes=1)
    _run([*cmd, "--workdir", str(two)], tmp_path, devices=1, processes=2)

    h1 = json.loads((one / "history.json").read_text())["losses"]
    h2 = json.loads((two / "history.json").read_text())["losses"]
    assert sorted(h1) == sorted(h2) == ["0", "1", "2"]
    assert "train/total_loss" in h1["0"] and "train/disc_loss" in h1["1"]
    for step in h1:
        assert h1[step].keys() == h2[step].keys()
        for k, v in h1[step].items():
            if k != "train/steps_per_sec":
                np.testing.assert_allclose(h2[step][k], v, rtol=1e-6, err_msg=f"{step} {k}")
    ema1, _ = wfvae_jax.load_pretrained(one / "export")
    ema2, _ = wfvae_jax.load_pretrained(two / "export")
    ema1, ema2 = jax.tree.map(np.asarray, ema1), jax.tree.map(np.asarray, ema2)
    for a, b in zip(jax.tree.leaves(ema1), jax.tree.leaves(ema2), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert (two / "checkpoints" / "3").is_dir()
