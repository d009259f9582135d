"""Hostile latent datasets: ``LatentSource`` does not trust ``manifest.json`` (shard names and
numbering, traversal, duplicates, symlink escapes, FIFOs, record shapes, sha256, corrupt shards).
The other classes of hostile input are in ``tests/test_hostile_inputs.py``."""

from __future__ import annotations

import os
import time

import pytest

# ---- latent datasets: the manifest is not trusted -------------------------------------------

_SHAPE = (2, 4, 4, 8)


def _dataset(out, num_shards=2, shape=_SHAPE):
    """A small latent dataset written with the format's own writer (no model needed)."""
    import numpy as np

    from wfvae_jax.data import latents as fmt

    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(num_shards):
        w = fmt.ShardWriter(out, s)
        for r in range(2):
            latent = np.full(shape, s * 10 + r, np.float32)
            src = {"video": f"v{s}.mp4", "start": r, "frame_stride": 1, "fps": 25.0, "size": [8, 8]}
            w.write(fmt.encode_record({"mean": latent, "logvar": latent}, src))
        shards.append(w.commit({"spec_hash": "h", "videos": [s, s + 1], "skipped": []}))
    keep = ("file", "videos", "records", "bytes", "sha256")
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "spec": {"encode": {"store": "mean_logvar"}, "videos_per_shard": 1},
        "spec_hash": "h" * 64,
        "scale": [1.0] * 8,
        "shift": [0.0] * 8,
        "latent_shape": list(_SHAPE),
        "num_shards": num_shards,
        "complete": True,
        "shards": [{k: m[k] for k in keep} for m in shards],
        "num_records": 2 * num_shards,
    }
    fmt.write_manifest(out, manifest)
    return manifest


def _edit_manifest(out, **changes):
    from wfvae_jax.data import latents as fmt

    manifest = {**fmt.read_manifest(out), **changes}
    fmt.write_manifest(out, manifest)


def test_latent_dataset_reads_back_and_verifies(tmp_path):
    from wfvae_jax.data import LatentSource

    _dataset(tmp_path / "d")
    src = LatentSource(tmp_path / "d", verify=True)
    assert len(src) == 4 and src[3]["mean"][0, 0, 0, 0] == 11 and src[3]["video"] == "v1.mp4"
    (tmp_path / "d" / "latents-00001.array_record").open("r+b").write(b"x")  # same size
    LatentSource(tmp_path / "d")  # sizes agree; only sha256 sees the change
    with pytest.raises(ValueError, match="latents-00001.array_record does not match the sha256"):
        LatentSource(tmp_path / "d", verify=True)


@pytest.mark.parametrize(
    "file, match",
    [
        ("../other/latents-00000.array_record", "not a shard of this numbering"),
        ("/etc/passwd", "not a shard of this numbering"),
        ("latents-00000.array_record", "listed twice"),
        ("latents-00007.array_record", "not a shard of this numbering"),
    ],
)
def test_manifest_traversal_and_duplicates_are_refused(tmp_path, file, match):
    from wfvae_jax.data import LatentSource

    _dataset(tmp_path / "other")
    manifest = _dataset(tmp_path / "d")
    shards = [dict(s) for s in manifest["shards"]]
    shards[1]["file"] = file
    _edit_manifest(tmp_path / "d", shards=shards)
    with pytest.raises(ValueError, match=match):
        LatentSource(tmp_path / "d")


@pytest.mark.parametrize("kind", ["outside", "proc", "fifo"])
def test_shard_symlinks_and_fifos_are_refused_without_blocking(tmp_path, kind):
    from wfvae_jax.data import LatentSource
    from wfvae_jax.io.confined import ConfinedFileError

    _dataset(tmp_path / "other")
    _dataset(tmp_path / "d")
    shard = tmp_path / "d" / "latents-00001.array_record"
    shard.unlink()
    if kind == "outside":
        os.symlink(tmp_path / "other" / "latents-00001.array_record", shard)
    elif kind == "proc":
        os.symlink("/proc/self/environ", shard)
    else:
        os.mkfifo(shard)
    t0 = time.perf_counter()
    with pytest.raises(ConfinedFileError, match="outside|FIFO") as e:
        LatentSource(tmp_path / "d")
    assert time.perf_counter() - t0 < 5 and e.value.hint


def test_record_shapes_and_corrupt_shards_are_named(tmp_path):
    import shutil

    from wfvae_jax.data import LatentSource

    _dataset(tmp_path / "d")
    _edit_manifest(tmp_path / "d", latent_shape=[2, 8, 8, 8])
    with pytest.raises(ValueError, match=r"latents-00000.array_record: record 0's mean has shape"):
        LatentSource(tmp_path / "d")[0]
    # A corrupt shard of the recorded size: the error names the file.
    _dataset(tmp_path / "e")
    bad = tmp_path / "e" / "latents-00001.array_record"
    size = bad.stat().st_size
    bad.write_bytes(b"\0" * size)
    with pytest.raises(ValueError, match="latents-00001.array_record"):
        src = LatentSource(tmp_path / "e")
        src[3]
    shutil.rmtree(tmp_path / "e")


def test_nan_never_reaches_a_manifest(tmp_path):
    from wfvae_jax.data import latents as fmt

    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        fmt.write_json_atomic(str(tmp_path / "m.json"), {"scale": [float("nan")]})
