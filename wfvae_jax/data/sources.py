"""Random-access video sources for grain: a folder of video files, or a prepared TFDS dataset.

Both return light records that ``SampleClip`` (``wfvae_jax.data.transforms``) turns into
``(T, H, W, 3)`` float32 windows in ``[-1, 1]``:
- ``VideoFolderSource``: ``{"path": str, "frames": int, "key": int}``, decoded lazily per example;
- ``TfdsVideoSource``: ``{"video": uint8 (T, H, W, 3), "key": int}``, already decoded by TFDS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wfvae_jax.io.decode import VIDEO_EXTENSIONS, count_frames

logger = logging.getLogger(__name__)

_INDEX_VERSION = 1


def find_videos(root: str | os.PathLike, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Video files under ``root`` (recursive, extension match case-insensitive), sorted, relative.

    Sorting makes record keys independent of the file system's listing order, so every process
    (and every run) sees the same index. Raises ValueError if ``root`` is not a directory.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"video folder not found: {root}")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.lower().endswith(exts) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def _probe(path: str) -> dict:
    """Index entry for one file: decodable frame count, or the error that made it unreadable."""
    try:
        frames = count_frames(path)
    except (ValueError, OSError) as e:
        return {"frames": 0, "error": f"{type(e).__name__}: {e}"}
    if frames == 0:
        return {"frames": 0, "error": "no decodable frames"}
    return {"frames": frames, "error": None}


def _index_path(cache_dir: str, root: str) -> str:
    digest = hashlib.sha1(os.path.realpath(root).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"video_index_{digest}.json")


def _load_cache(path: str | None, root: str) -> dict:
    if path is None or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable video index cache %s: %s", path, e)
        return {}
    if data.get("version") != _INDEX_VERSION or data.get("root") != os.path.realpath(root):
        return {}
    return data.get("entries", {})


def _save_cache(path: str, root: str, entries: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    data = {"version": _INDEX_VERSION, "root": os.path.realpath(root), "entries": entries}
    # Write then rename: several processes may build the index at once, and a reader must never
    # see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def build_video_index(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    num_workers: int = 1,
) -> dict[str, dict]:
    """Decodable frame counts of every video under ``root``, cached as JSON in ``cache_dir``.

    Returns ``{relative_path: {"size", "mtime_ns", "frames", "error"}}`` in sorted path order;
    ``error`` is ``None`` for readable files, else the reason (``frames`` is then 0). A cached
    entry is reused only while the file's size and mtime are unchanged, so edits re-probe just
    the edited files. The cache file is ``cache_dir/video_index_<sha1(realpath(root))[:16]>.json``;
    ``cache_dir=None`` disables caching. ``num_workers > 1`` probes files from that many threads.
    """
    root = os.fspath(root)
    files = find_videos(root, extensions)
    cache_path = None if cache_dir is None else _index_path(os.fspath(cache_dir), root)
    cached = _load_cache(cache_path, root)
    entries: dict[str, dict] = {}
    todo = []
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError as e:  # deleted (or made unreadable) since the listing
            entries[rel] = {"size": -1, "mtime_ns": -1, "frames": 0, "error": f"missing: {e}"}
            continue
        old = cached.get(rel)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            entries[rel] = old
        else:
            entries[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            todo.append(rel)
    if todo:
        paths = [os.path.join(root, rel) for rel in todo]
        if num_workers > 1:
            with ThreadPoolExecutor(num_workers) as pool:
                probes = list(pool.map(_probe, paths))
        else:
            probes = [_probe(p) for p in paths]
        for rel, probe in zip(todo, probes, strict=True):
            entries[rel].update(probe)
    if cache_path is not None and (todo or set(cached) != set(entries)):
        _save_cache(cache_path, root, entries)
    return entries


class VideoFolderSource:
    """grain ``RandomAccessDataSource`` over the video files in a folder (searched recursively).

    Each record is ``{"path": absolute path, "frames": decodable frame count, "key": record key}``;
    frames are decoded later by ``SampleClip``. Files that cannot be opened or decoded and files
    with fewer than ``min_frames`` decodable frames are skipped: each is logged, a summary
    ``warnings.warn`` is issued, and they are counted in ``skipped_counts`` and listed in
    ``skipped`` (path -> reason). Nothing about a bad file raises.

    Args:
      root: folder searched recursively for ``extensions`` (mp4, avi, mkv, mov, webm).
      min_frames: the window span the pipeline will draw, ``window_span(num_frames, frame_stride)``.
      cache_dir: where the JSON index of frame counts is kept (``build_video_index``); ``None``
        re-probes every file on construction.
      num_index_workers: threads for building the index.

    Raises:
      ValueError: ``root`` is not a directory, or no usable video remains (the message gives the
        skip counts).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        min_frames: int = 1,
        cache_dir: str | os.PathLike | None = None,
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
        num_index_workers: int = 1,
    ):
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.root = os.path.realpath(os.fspath(root))
        self.min_frames = int(min_frames)
        index = build_video_index(self.root, cache_dir, extensions, num_index_workers)
        self.paths: list[str] = []
        self.frames: list[int] = []
        self.skipped: dict[str, str] = {}
        self.num_unreadable = 0
        self.num_too_short = 0
        for rel, entry in index.items():
            path = os.path.join(self.root, rel)
            if entry["error"] is not None:
                self.num_unreadable += 1
                self.skipped[path] = f"unreadable: {entry['error']}"
            elif entry["frames"] < self.min_frames:
                self.num_too_short += 1
                self.skipped[path] = (
                    f"too short: {entry['frames']} decodable frames < {self.min_frames}"
                )
            else:
                self.paths.append(path)
                self.frames.append(int(entry["frames"]))
        for path, reason in self.skipped.items():
            logger.warning("skipping video %s (%s)", path, reason)
        if self.skipped:
            warnings.warn(
                f"VideoFolderSource({self.root}): skipped {self.num_unreadable} unreadable and "
                f"{self.num_too_short} too-short (< {self.min_frames} frames) video files; "
                f"{len(self.paths)} remain. See .skipped for the reasons.",
                stacklevel=2,
            )
        if not self.paths:
            raise ValueError(
                f"no usable video under {self.root} (extensions {tuple(extensions)}): "
                f"{self.num_unreadable} unreadable, {self.num_too_short} shorter than "
                f"{self.min_frames} frames"
            )

    def mark_unreadable(self, record_key: int, reason: str) -> bool:
        """Counts record ``record_key`` as unreadable, as if the scan had found it so; returns
        whether it was new. Called by the train loop when a file fails during training (deleted
        or corrupted after the scan); the record stays in the index, so keys and the data order
        do not move, and ``SampleClip`` reads a neighbour in its place (see there)."""
        path = self.paths[int(record_key)]
        if path in self.skipped:
            return False
        self.num_unreadable += 1
        self.skipped[path] = f"unreadable during training: {reason}"
        logger.warning("skipping video %s (%s)", path, self.skipped[path])
        return True

    def manifest(self) -> dict:
        """What the data order depends on, for the checkpoint (``train.checkpointing``):
        ``{"root", "min_frames", "videos": [[relative path, decodable frames], ...]}`` (sorted,
        the record keys' order)."""
        return {
            "root": self.root,
            "min_frames": self.min_frames,
            "videos": [
                [os.path.relpath(p, self.root), n]
                for p, n in zip(self.paths, self.frames, strict=True)
            ],
        }

    @property
    def skipped_counts(self) -> dict[str, int]:
        """``{"unreadable": n, "too_short": n}``: files left out of the index."""
        return {"unreadable": self.num_unreadable, "too_short": self.num_too_short}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, record_key: int) -> dict:
        record_key = int(record_key)
        return {
            "path": self.paths[record_key],
            "frames": self.frames[record_key],
            "key": record_key,
        }

    def __repr__(self) -> str:
        # grain compares repr() of the source when restoring an iterator state, so it names the
        # indexed content (relative paths and lengths) but not the folder's location: a run can
        # resume with the same videos mounted elsewhere.
        relative = [os.path.relpath(p, self.root) for p in self.paths]
        digest = hashlib.sha1(
            json.dumps([relative, self.frames]).encode(), usedforsecurity=False
        ).hexdigest()[:12]
        return (
            f"VideoFolderSource(num_videos={len(self)}, min_frames={self.min_frames}, "
            f"index={digest})"
        )


class TfdsVideoSource:
    """grain ``RandomAccessDataSource`` over a prepared TFDS dataset (array_record files).

    Wraps ``tfds.data_source(name, split=split, data_dir=data_dir)``; each record becomes
    ``{"video": uint8 (T, H, W, 3), "key": record key}`` from the ``video_key`` feature, which must
    decode to uint8 RGB frames. Without tensorflow installed this works for features stored as
    ``tfds.features.Tensor`` (e.g. ``Tensor(shape=(None, H, W, 3), dtype=np.uint8,
    encoding="zlib")``); tfds 4.9.10's ``tfds.features.Video`` needs tensorflow to load.
    Records shorter than the window are dropped by the pipeline (``make_video_dataset``).

    Raises:
      ValueError: the dataset was not prepared in ``array_record`` format or cannot be found.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | os.PathLike | None = None,
        video_key: str = "video",
    ):
        import tensorflow_datasets as tfds  # heavy import, only for users of this source

        self.name, self.split, self.video_key = name, split, video_key
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        try:
            self._source = tfds.data_source(name, split=split, data_dir=self.data_dir)
        except Exception as e:  # tfds raises several unrelated types for "not prepared"
            raise ValueError(
                f"cannot open TFDS dataset {name!r} split {split!r} in {self.data_dir}: "
                f"{type(e).__name__}: {e}"
            ) from e

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, record_key: int) -> dict:
        record_key = int(record_key)
        record = self._source[record_key]
        if self.video_key not in record:
            raise ValueError(
                f"TFDS record {record_key} of {self.name} has no key {self.video_key!r} "
                f"(keys: {sorted(record)})"
            )
        video = np.asarray(record[self.video_key])
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(
                f"{self.name}[{record_key}][{self.video_key!r}] must be uint8 (T, H, W, 3), got "
                f"{video.dtype} {video.shape}"
            )
        return {"video": video, "key": record_key}

    def __repr__(self) -> str:
        return (
            f"TfdsVideoSource(name={self.name!r}, split={self.split!r}, "
            f"data_dir={self.data_dir!r}, video_key={self.video_key!r}, num_records={len(self)})"
        )
