"""A folder of videos indexed for random access by grain: :class:`VideoFolderSource`, whose
records ``{"path": str, "frames": int, "key": int}`` ``SampleClip`` (``wfvae_jax.data.transforms``)
decodes into ``(T, H, W, 3)`` float32 windows in ``[-1, 1]``; the index of decodable frame counts
(:func:`build_video_index`) it is built on. A prepared TFDS dataset is ``wfvae_jax.data.tfds``'s
``TfdsVideoSource``, whose records hold the decoded frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from wfvae_jax.data.video_source import VideoFiles, find_videos
from wfvae_jax.io.decode import VIDEO_EXTENSIONS, count_frames

logger = logging.getLogger(__name__)

_INDEX_VERSION = 1


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
    *,
    files: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Decodable frame counts of every video under ``root`` (or of ``files``, relative to it),
    cached as JSON in ``cache_dir``.

    Returns ``{relative_path: {"size", "mtime_ns", "frames", "error"}}`` in sorted path order;
    ``error`` is ``None`` for readable files, else the reason (``frames`` is then 0). A cached
    entry is reused only while the file's size and mtime are unchanged, so edits re-probe just
    the edited files. The cache file is ``cache_dir/video_index_<sha1(realpath(root))[:16]>.json``;
    ``cache_dir=None`` disables caching. ``num_workers > 1`` probes files from that many threads.
    """
    root = os.fspath(root)
    files = find_videos(root, extensions) if files is None else list(files)
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


class VideoFolderSource(VideoFiles):
    """grain ``RandomAccessDataSource`` over the video files in a folder (searched recursively):
    the :class:`~wfvae_jax.data.video_source.VideoFiles` that have at least ``min_frames``.

    Each record is ``{"path": absolute path, "frames": decodable frame count, "key": record key}``;
    frames are decoded later by ``SampleClip``. Files that cannot be opened or decoded and files
    with fewer than ``min_frames`` decodable frames are skipped: each is logged, a summary
    ``warnings.warn`` is issued, and they are counted in ``skipped_counts`` and listed in
    ``skipped`` (path -> reason). Nothing about a bad file raises.

    Args:
      root: folder searched recursively for ``extensions`` (mp4, avi, mkv, mov, webm).
      exclude: files left out before indexing (``VideoFiles``), e.g. held-out evaluation videos.
      min_frames: the window span the pipeline will draw, ``window_span(num_frames, frame_stride)``.
      cache_dir: where the JSON index of frame counts is kept (``build_video_index``); ``None``
        re-probes every file on construction.
      num_index_workers: threads for building the index.

    Raises:
      ValueError: ``root`` is not a directory, or no usable video remains (the message gives the
        skip counts).
    Attributes:
      paths, frames: the usable files and their decodable frame counts (record ``key`` order);
      skipped: path -> why it is left out; excluded: what ``exclude`` left out.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        min_frames: int = 1,
        cache_dir: str | os.PathLike | None = None,
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
        num_index_workers: int = 1,
        exclude: Sequence[str] = (),
    ):
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        listing = VideoFiles(root, exclude=exclude, extensions=extensions)
        self.root = listing.root
        self.min_frames = int(min_frames)
        index = build_video_index(
            self.root, cache_dir, num_workers=num_index_workers, files=listing.names
        )
        usable: list[str] = []
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
                usable.append(rel)
                self.frames.append(int(entry["frames"]))
        for path, reason in self.skipped.items():
            logger.warning("skipping video %s (%s)", path, reason)
        if self.skipped:
            warnings.warn(
                f"VideoFolderSource({self.root}): skipped {self.num_unreadable} unreadable and "
                f"{self.num_too_short} too-short (< {self.min_frames} frames) video files; "
                f"{len(usable)} remain. See .skipped for the reasons.",
                stacklevel=2,
            )
        if not usable:
            raise ValueError(
                f"no usable video under {self.root} (extensions {tuple(extensions)}): "
                f"{self.num_unreadable} unreadable, {self.num_too_short} shorter than "
                f"{self.min_frames} frames"
            )
        super().__init__(self.root, usable)
        self.excluded = listing.excluded

    def num_frames(self, index: int) -> int:
        """Decodable frames of record ``index`` (from the index: nothing is decoded)."""
        return self.frames[int(index)]

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
