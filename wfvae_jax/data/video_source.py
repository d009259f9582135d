"""Videos in a fixed order, from a folder or a prepared TFDS dataset, and the clips a
:class:`~wfvae_jax.io.clip_spec.ClipSpec` takes from each.

:class:`VideoSource` is the one listing of videos that evaluation, training, ``wfvae
encode-dataset``, ``wfvae latent-stats`` and ``wfvae analyze`` read:

- :class:`VideoFiles`: the video files under a folder (:func:`find_videos`: recursive, sorted, so
  every process and every run sees the same order), less the files named in ``exclude``; or a
  given list of files. ``wfvae_jax.data.VideoFolderSource`` adds the decodable frame count of each
  file, for random access by grain.
- ``wfvae_jax.data.TfdsVideoSource``: the records of a prepared TFDS dataset, in order.

:meth:`VideoSource.read` takes a video's clips where the spec's sampling policy puts them
(``ClipSpec.window_starts``: consecutive clips, evenly spaced windows, a random window) in one
decoding pass (``wfvae_jax.io.windows.cut_windows``); :meth:`VideoSource.clips` does so for every
video and records why a video gave none (``missing: ...``, ``unreadable: ...``, ``too short:
...``), the reasons every command reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import av
import numpy as np

from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.decode import (
    VIDEO_EXTENSIONS,
    count_frames,
    decoded_frames,
    frame_rate,
    open_video,
)
from wfvae_jax.io.frames import ClipGeometry
from wfvae_jax.io.windows import ClipTooShortError, cut_windows


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


@dataclasses.dataclass
class VideoClips:
    """The clips :meth:`VideoSource.read` took from one video.

    Attributes:
      clips: float32 ``(num_frames, H, W, 3)`` arrays in [-1, 1], in start order.
      starts: the decoded index of each clip's first frame.
      fps: the source's frame rate (0.0 when it states none, as TFDS records).
      size: the decoded frame size ``(H, W)``.
      geometry: how frames were resized and cropped (``ClipGeometry.describe`` for logs).
      frames_seen: decodable frames read (all of them unless every clip was complete earlier).
    """

    clips: list[np.ndarray]
    starts: list[int]
    fps: float
    size: tuple[int, int] | None
    geometry: ClipGeometry | None
    frames_seen: int


@dataclasses.dataclass
class OpenedVideo:
    """One video ready to read: its decodable ``frames`` in order (``av.VideoFrame`` or uint8
    ``(H, W, 3)`` arrays), its frame rate (0.0: unknown) and its frame count when that is known
    without decoding (else None)."""

    frames: Iterable[Any]
    fps: float
    count: int | None = None


class VideoSource:
    """Videos in a fixed order (base class of :class:`VideoFiles` and ``TfdsVideoSource``).

    Subclasses give ``__len__``, :meth:`video_id`, :meth:`stem`, :meth:`num_frames`,
    :meth:`open`, :meth:`identity`, :meth:`info` and :meth:`describe`; reading clips is common
    to all of them.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def video_id(self, index: int) -> str:
        """What names video ``index`` in a dataset: a relative path, ``tfds:NAME/SPLIT[i]``."""
        raise NotImplementedError

    def where(self, index: int) -> str:
        """Where video ``index`` is, for messages (a file's full path)."""
        return self.video_id(index)

    def stem(self, index: int) -> str:
        """A unique, file-system-safe name of video ``index`` for output files."""
        raise NotImplementedError

    def describe(self) -> str:
        """``folder:ROOT``, ``files`` or ``tfds:NAME/SPLIT``, for reports."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What a dataset built from these videos depends on (not where they are)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Where the videos are, for a manifest (not part of :meth:`identity`)."""
        raise NotImplementedError

    def open(self, index: int) -> contextlib.AbstractContextManager[OpenedVideo]:
        """A context manager giving video ``index`` as an :class:`OpenedVideo`.

        Raises FileNotFoundError / ValueError for a missing or unreadable video."""
        raise NotImplementedError

    def num_frames(self, index: int) -> int:
        """Decodable frames of video ``index`` (a file is decoded to count them)."""
        raise NotImplementedError

    def read(
        self, index: int, spec: ClipSpec, rng: np.random.Generator | None = None
    ) -> VideoClips:
        """Video ``index``'s clips as ``spec`` says (``spec.window_starts``), in one decoding pass
        (two for ``evenly_spaced`` and ``random`` sampling of a file, which count its frames
        first unless the source knows them).

        Raises:
          FileNotFoundError: a missing file. ValueError: a file that cannot be decoded.
          wfvae_jax.io.windows.ClipTooShortError: not one clip fits (``available``: the frames
            the first clip got).
        """
        with self.open(index) as video:
            total = None
            if spec.sampling != "consecutive":
                total = self.num_frames(index) if video.count is None else video.count
            starts = spec.window_starts(total, rng)
            w = cut_windows(
                video.frames if starts else (),
                starts,
                spec.num_frames,
                spec.frame_stride,
                spec.resolution,
                spec.crop,
                rng=rng,
                resample=spec.resample,
                multiple=spec.multiple,
            )
            fps = video.fps
        seen = w.frames_seen if total is None else total
        if not w.clips:
            on = f" from frame {spec.start}" if spec.start else ""
            raise ClipTooShortError(
                f"{seen} decodable frames, a clip of {spec.num_frames} frames at frame_stride "
                f"{spec.frame_stride} spans {spec.span}{on}",
                available=w.counts[0] if w.counts else 0,
            )
        return VideoClips(w.clips, w.starts, fps, w.size, w.geometry, seen)

    def try_read(
        self, index: int, spec: ClipSpec, rng: np.random.Generator | None = None
    ) -> tuple[VideoClips | None, str]:
        """:meth:`read`, or ``(None, reason)`` for a video that gives no clip; the reason is
        ``"missing: ..."``, ``"unreadable: ..."`` or ``"too short: ..."``."""
        try:
            return self.read(index, spec, rng), ""
        except FileNotFoundError as e:
            return None, f"missing: {e}"
        except ClipTooShortError as e:
            return None, f"too short: {e}"
        except (ValueError, OSError, av.error.FFmpegError) as e:
            return None, f"unreadable: {e}"

    def clips(
        self, spec: ClipSpec, *, limit: int | None = None, skipped: dict[str, str] | None = None
    ) -> Iterator[tuple[int, VideoClips]]:
        """``(index, clips)`` of each video that gives a clip, in order, up to ``limit`` videos;
        the others go into ``skipped`` (:meth:`where` -> the :meth:`try_read` reason)."""
        produced = 0
        for index in range(len(self)):
            if limit is not None and produced >= limit:
                return
            got, reason = self.try_read(index, spec)
            if got is None:
                if skipped is not None:
                    skipped[self.where(index)] = reason
                continue
            produced += 1
            yield index, got


def _stems(relative_paths: Sequence[str]) -> list[str]:
    """Output stems: the relative path without extension, ``/`` -> ``__``; the extension is
    appended only where two files would otherwise collide (``a.mp4`` and ``a.avi``)."""
    base = [os.path.splitext(p)[0].replace(os.sep, "__").replace("/", "__") for p in relative_paths]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    return [
        b if counts[b] == 1 else f"{b}_{os.path.splitext(p)[1].lstrip('.')}"
        for b, p in zip(base, relative_paths, strict=True)
    ]


class VideoFiles(VideoSource):
    """Video files: those under a folder, or a given list.

    Args:
      root: a folder searched recursively (:func:`find_videos`), or ``None`` with ``files``.
      files: the files, relative to ``root`` (or as given without a root); default: all found.
      exclude: paths (absolute, or relative to ``root``) or base names of files to leave out
        (e.g. held-out evaluation videos and their re-encoded copies).
      extensions: what :func:`find_videos` looks for.
    Attributes:
      names: the files relative to ``root``; paths: their full paths; excluded: what
      ``exclude`` left out (full paths).
    Raises:
      ValueError: ``root`` is not a directory, or no video file is left.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        files: Sequence[str] | None = None,
        *,
        exclude: Sequence[str] = (),
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
    ):
        self.root = None if root is None else os.path.realpath(os.fspath(root))
        if files is None:
            names = find_videos(self.root, extensions)
        else:
            names = [os.fspath(f) for f in files]
        full = [n if self.root is None else os.path.join(self.root, n) for n in names]
        real = {os.path.realpath(os.path.join(self.root or "", e)) for e in exclude}
        base = {os.path.basename(e) for e in exclude}
        keep = [os.path.realpath(p) not in real and os.path.basename(p) not in base for p in full]
        self.names = [n for n, k in zip(names, keep, strict=True) if k]
        self.paths = [p for p, k in zip(full, keep, strict=True) if k]
        self.excluded = [p for p, k in zip(full, keep, strict=True) if not k]
        if not self.names:
            where = f"under {self.root}" if self.root else "given"
            left = f" after excluding {list(exclude)}" if self.excluded else ""
            raise ValueError(f"no video files (mp4, avi, mkv, mov, webm) {where}{left}")

    def __len__(self) -> int:
        return len(self.paths)

    def video_id(self, index: int) -> str:
        return self.names[index]

    def where(self, index: int) -> str:
        return self.paths[index]

    @functools.cached_property
    def _all_stems(self) -> list[str]:
        return _stems(self.names)

    def stem(self, index: int) -> str:
        return self._all_stems[index]

    def describe(self) -> str:
        return "files" if self.root is None else f"folder:{self.root}"

    def identity(self) -> dict[str, Any]:
        """The relative paths, not the root: the same videos elsewhere are the same dataset."""
        listing = hashlib.sha256("\n".join(self.names).encode()).hexdigest()
        return {"kind": "folder", "num_videos": len(self.names), "videos_sha256": listing}

    def info(self) -> dict[str, Any]:
        """The root and the relative paths, so a later run over a changed folder can name what
        changed."""
        return {"root": self.root, "videos": list(self.names)}

    def num_frames(self, index: int) -> int:
        return count_frames(self.paths[index])

    @contextlib.contextmanager
    def open(self, index: int) -> Iterator[OpenedVideo]:
        path = self.paths[index]
        with open_video(path) as container:
            yield OpenedVideo(decoded_frames(container, path), frame_rate(container))
