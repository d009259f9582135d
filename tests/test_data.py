"""Tests for wfvae_jax.data: folder index and cache, skipping bad files, reproducibility, resume,
sharding, and the TFDS source."""

from __future__ import annotations

import functools
import json
import os
import shutil

import numpy as np
import pytest

from wfvae_jax.data import (
    SampleClip,
    TfdsVideoSource,
    VideoFolderSource,
    find_videos,
    make_video_dataset,
    sources,
    window_span,
)
from wfvae_jax.io.video import count_frames, read_video, to_float, write_video

DATA = os.path.join(os.path.dirname(__file__), "data", "videos")
GOOD = {  # relative path -> decodable frames (see tests/data/videos/README.md)
    "bikes_0000.mp4": 20,
    "bikes_0120.mp4": 20,
    "sub/bikes_0200.mov": 12,
    "sub/carphone_0000.mkv": 17,
    "tree_excerpt.avi": 10,
}
NUM_FRAMES, FRAME_STRIDE = 5, 2  # window span 9: every GOOD clip fits, "short.mp4" does not
SPAN = window_span(NUM_FRAMES, FRAME_STRIDE)
quiet = pytest.mark.filterwarnings("ignore:VideoFolderSource")


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> str:
    """The test clips plus bad files: 3 unreadable, 1 too short, 1 non-video."""
    root = tmp_path_factory.mktemp("videos")
    shutil.copytree(DATA, root, dirs_exist_ok=True)
    (root / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    good = (root / "bikes_0120.mp4").read_bytes()
    (root / "sub" / "truncated.mp4").write_bytes(good[: len(good) // 2])  # moov atom cut off
    (root / "empty.webm").write_bytes(b"")
    write_video(root / "short.mp4", read_video(root / "bikes_0000.mp4", 3), fps=25)
    (root / "notes.txt").write_text("not a video")
    return str(root)


@pytest.fixture(scope="module")
def folder_source(video_dir) -> VideoFolderSource:
    with pytest.warns(UserWarning, match="skipped 3 unreadable and 1 too-short"):
        return VideoFolderSource(video_dir, min_frames=SPAN)


def test_find_videos_recursive_sorted(video_dir):
    found = find_videos(video_dir)
    assert found == sorted(
        list(GOOD) + ["junk.mp4", "sub/truncated.mp4", "empty.webm", "short.mp4"]
    )


def test_folder_source_skips_and_counts(folder_source, video_dir):
    src = folder_source
    assert len(src) == len(GOOD)
    assert src.skipped_counts == {"unreadable": 3, "too_short": 1}
    assert {os.path.relpath(p, video_dir) for p in src.skipped} == {
        "junk.mp4",
        "sub/truncated.mp4",
        "empty.webm",
        "short.mp4",
    }
    assert "3 decodable frames" in src.skipped[os.path.join(src.root, "short.mp4")]
    for key in range(len(src)):
        rec = src[key]
        rel = os.path.relpath(rec["path"], src.root)
        assert rec["frames"] == GOOD[rel] == count_frames(rec["path"])
        assert rec["key"] == key


def test_index_cache_reused_and_refreshed(video_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real_count = sources.count_frames

    def counting(path):
        calls.append(os.path.basename(path))
        return real_count(path)

    monkeypatch.setattr(sources, "count_frames", counting)
    with pytest.warns(UserWarning):
        first = VideoFolderSource(video_dir, min_frames=SPAN, cache_dir=cache)
    assert len(calls) == 9  # every candidate file probed once
    (cache_file,) = cache.iterdir()
    entries = json.loads(cache_file.read_text())["entries"]
    st = os.stat(os.path.join(video_dir, "bikes_0000.mp4"))
    assert entries["bikes_0000.mp4"] == {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "frames": 20,
        "error": None,
    }
    assert entries["junk.mp4"]["error"] is not None

    calls.clear()
    with pytest.warns(UserWarning):
        again = VideoFolderSource(video_dir, min_frames=SPAN, cache_dir=cache)
    assert calls == []
    assert again.paths == first.paths and again.frames == first.frames
    assert repr(again) == repr(first)

    # A changed file (new size and mtime) is the only one probed again. Work on a copy so the
    # module's folder stays as the other tests expect.
    copy = tmp_path / "copy"
    shutil.copytree(video_dir, copy)
    with pytest.warns(UserWarning):
        moved = VideoFolderSource(copy, min_frames=SPAN, cache_dir=cache)
    # Same content elsewhere: same repr, which grain checks when restoring an iterator state.
    assert repr(moved) == repr(first)
    calls.clear()
    write_video(copy / "short.mp4", read_video(copy / "bikes_0000.mp4", 11), fps=25)
    with pytest.warns(UserWarning, match="0 too-short"):
        refreshed = VideoFolderSource(copy, min_frames=SPAN, cache_dir=cache)
    assert calls == ["short.mp4"]
    assert len(refreshed) == len(GOOD) + 1


def test_no_usable_video_raises(tmp_path):
    (tmp_path / "junk.avi").write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable video"):
        VideoFolderSource(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        VideoFolderSource(tmp_path / "missing")


def test_sample_clip_draw_order(folder_source):
    """Window start first, then the crop, both from the record's rng."""
    rec = folder_source[1]
    clip = SampleClip(NUM_FRAMES, FRAME_STRIDE, 32, crop="random").random_map(
        rec, np.random.default_rng(7)
    )
    rng = np.random.default_rng(7)
    start = int(rng.integers(0, rec["frames"] - SPAN + 1))
    want = read_video(
        rec["path"], NUM_FRAMES, FRAME_STRIDE, start, resolution=32, crop="random", rng=rng
    )
    assert clip["key"] == 1 and clip["video"].shape == (NUM_FRAMES, 32, 32, 3)
    np.testing.assert_array_equal(clip["video"], want)


def take(it, n):
    return [next(it) for _ in range(n)]


def make(source, **kwargs):
    args = dict(
        num_frames=NUM_FRAMES,
        frame_stride=FRAME_STRIDE,
        resolution=24,
        batch_size=2,
        seed=0,
    )
    args.update(kwargs)
    return make_video_dataset(source, **args)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["key"], y["key"])
        np.testing.assert_array_equal(x["video"], y["video"])


def test_batches_shape_and_range(folder_source):
    (batch,) = take(make(folder_source), 1)
    assert batch["video"].shape == (2, NUM_FRAMES, 24, 24, 3)
    assert batch["video"].dtype == np.float32
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    assert batch["key"].shape == (2,)


def test_same_seed_same_batches_other_seed_differs(folder_source):
    # 4 batches of 2 from 5 videos: crosses an epoch boundary.
    a = take(make(folder_source, seed=3), 4)
    b = take(make(folder_source, seed=3), 4)
    assert_batches_equal(a, b)
    c = take(make(folder_source, seed=4), 4)
    assert any(not np.array_equal(x["video"], y["video"]) for x, y in zip(a, c, strict=True))


def test_random_crop_differs_from_center(folder_source):
    rand = take(make(folder_source, crop="random", seed=1), 3)
    cent = take(make(folder_source, crop="center", seed=1), 3)
    assert_batches_equal(
        [{"key": x["key"], "video": 0} for x in rand],
        [{"key": x["key"], "video": 0} for x in cent],
    )
    assert any(not np.array_equal(x["video"], y["video"]) for x, y in zip(rand, cent, strict=True))


def test_state_restore_gives_same_next_batches(folder_source):
    it = make(folder_source, seed=5)
    take(it, 3)
    state = it.get_state()
    assert isinstance(state, bytes)
    expected = take(it, 3)
    resumed = make(folder_source, seed=5)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), expected)


def test_shards_are_disjoint(folder_source):
    keys = []
    for shard in range(2):
        it = make(folder_source, shard_index=shard, shard_count=2, num_epochs=1, batch_size=1)
        keys.append([int(b["key"][0]) for b in it])
    # 5 records, drop_remainder: 2 per shard, every record at most once per epoch.
    assert [len(k) for k in keys] == [2, 2]
    assert len(set(keys[0]) | set(keys[1])) == 4
    with pytest.raises(ValueError):
        make(folder_source, shard_index=2, shard_count=2)


def test_epoch_visits_every_record_once(folder_source):
    keys = [int(b["key"][0]) for b in make(folder_source, num_epochs=2, batch_size=1)]
    assert sorted(keys[:5]) == sorted(keys[5:]) == list(range(5))
    assert keys[:5] != keys[5:]  # reshuffled per epoch (fixed seed 0)


def test_source_must_cover_the_window(video_dir):
    with pytest.warns(UserWarning):
        src = VideoFolderSource(video_dir, min_frames=3)
    with pytest.raises(ValueError, match="min_frames=9"):
        make(src)


@quiet
def test_path_source_with_cache(video_dir, tmp_path, folder_source):
    a = take(make(video_dir, cache_dir=tmp_path), 2)
    assert_batches_equal(a, take(make(folder_source), 2))
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_worker_process_matches_in_process(folder_source):
    """worker_count=1 runs (google/grain#1355 workaround) and yields the in-process batches."""
    in_process = take(make(folder_source, batch_size=1, seed=2), 4)
    it = make(folder_source, batch_size=1, seed=2, worker_count=1)
    assert_batches_equal(take(it, 4), in_process)


# --- TFDS source ---------------------------------------------------------------------------

TFDS_LENGTHS = (20, 12, 4, 15)  # record 2 is shorter than the window span (9)


@functools.cache
def _tfds_builder_class():
    tfds = pytest.importorskip("tensorflow_datasets")

    class WfvaeTestTinyVideos(tfds.core.GeneratorBasedBuilder):
        """Windows of bikes_0000.mp4 as uint8 Tensor features (no tensorflow needed)."""

        VERSION = tfds.core.Version("1.0.0")
        # A one-part module name makes tfds skip its package-resource lookup of the builder's
        # code (checksums file), which needs the `importlib_resources` backport, not a
        # dependency here; a builder defined in a script (`__main__`) takes the same path.
        __module__ = "wfvae_test_tiny_videos_builder"

        def _info(self):
            video = tfds.features.Tensor(shape=(None, 68, 160, 3), dtype=np.uint8, encoding="zlib")
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({"video": video, "id": np.int64})
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            frames = np.round((read_video(os.path.join(DATA, "bikes_0000.mp4"), 20) + 1) * 127.5)
            frames = frames.astype(np.uint8)
            for i, length in enumerate(TFDS_LENGTHS):
                yield i, {"video": frames[i : i + length], "id": i}

    return WfvaeTestTinyVideos


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = _tfds_builder_class()(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return data_dir


def test_tfds_source_windows(tfds_dir):
    src = TfdsVideoSource("wfvae_test_tiny_videos", "train", data_dir=tfds_dir)
    assert len(src) == 4
    stored = [src[k]["video"] for k in range(4)]
    # tfds shuffles records when writing, so record keys are not the generation order.
    lengths = [v.shape[0] for v in stored]
    assert sorted(lengths) == sorted(TFDS_LENGTHS)
    assert "wfvae_test_tiny_videos" in repr(src)

    it = make(src, resolution=(68, 160), crop="center", batch_size=1, num_epochs=2, seed=1)
    batches = list(it)
    keys = [int(b["key"][0]) for b in batches]
    long_enough = [k for k in range(4) if lengths[k] >= SPAN]
    assert len(long_enough) == 3
    assert sorted(keys) == sorted(long_enough * 2)  # the too-short record is filtered out
    for b in batches:
        video = stored[int(b["key"][0])]
        clip = b["video"][0]
        # No resize at the stored size: the clip is one strided window of the record.
        windows = [
            to_float(video[s : s + SPAN : FRAME_STRIDE]) for s in range(video.shape[0] - SPAN + 1)
        ]
        assert any(np.array_equal(clip, w) for w in windows)

    again = list(make(src, resolution=(68, 160), crop="center", batch_size=1, num_epochs=2, seed=1))
    assert_batches_equal(batches, again)


def test_tfds_source_errors(tfds_dir):
    with pytest.raises(ValueError, match="no_such_dataset"):
        TfdsVideoSource("no_such_dataset", "train", data_dir=tfds_dir)
    src = TfdsVideoSource("wfvae_test_tiny_videos", "train", data_dir=tfds_dir, video_key="rgb")
    with pytest.raises(ValueError, match="no key 'rgb'"):
        src[0]
