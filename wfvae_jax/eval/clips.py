"""Evaluation clips: the first ``num_frames`` frames of each video, resized and centre-cropped.

Clip selection follows the reference eval (``ValidVideoDataset`` in
causalvideovae/dataset/video_dataset.py and examples/eval.sh): every video contributes one clip
that starts at its first frame, takes ``num_frames`` frames ``frame_stride`` apart, resizes the
short side to ``resolution`` (antialiased bilinear) and centre-crops a square of that size. The
resolution and crop follow ``wfvae_jax.io.video.ClipSpec`` (``S``, ``HxW`` or native;
``crop="none"`` keeps the aspect ratio), the one rule every command uses. Videos that are too
short or cannot be decoded are skipped and listed with the reason (the reference raises
instead); nothing is skipped silently.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.decode import DEFAULT_FPS, probe_video
from wfvae_jax.io.frames import resize_and_crop


@dataclasses.dataclass
class EvalClip:
    """One evaluation clip.

    Attributes:
      name: unique, file-system-safe stem for output files (``recon/NAME.mp4``, ...).
      video: float32 ``(T, H, W, 3)`` in [-1, 1].
      fps: frames per second of the clip as sampled (source rate / ``frame_stride``).
      source: where it came from (a file path, or ``tfds:NAME/SPLIT[i]``).
      geometry: how the frames were resized and cropped (``ClipGeometry.describe``).
    """

    name: str
    video: np.ndarray
    fps: float
    source: str
    geometry: str = ""


def clip_spec(
    num_frames: int,
    resolution: int | tuple[int, int] | None,
    frame_stride: int = 1,
    crop: str = "center",
    resample: str = "bilinear",
    config: Any = None,
) -> ClipSpec:
    """The evaluation :class:`ClipSpec` (clips start at frame 0); with ``config``, the frame
    count is checked against the model's rule (``config.check_num_frames``).

    Raises ValueError for a bad setting (the message names the nearest valid value).
    """
    spec = ClipSpec(num_frames, frame_stride, 0, resolution, crop, resample)
    if config is not None:
        config.check_num_frames(num_frames, "clip")
    return spec


def _stems(relative_paths: list[str]) -> list[str]:
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


class FolderClips:
    """Clips from the video files under a folder (recursive, sorted paths, so runs agree).

    Args:
      root: folder searched with ``wfvae_jax.data.find_videos`` (mp4, avi, mkv, mov, webm).
      num_frames, resolution, frame_stride, crop, config: see :func:`clip_spec`.
      max_videos: stop after this many usable clips (``None``: all).
      resample: ``read_video``'s filter (``"bilinear"`` as the reference).

    Iterating yields :class:`EvalClip`; ``skipped`` maps each unusable file to its reason.
    ``len()`` is an upper bound (files that will be tried), for progress bars.

    Raises:
      ValueError: bad settings, ``root`` not a directory, or no video file under it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int,
        resolution: int | tuple[int, int] | None,
        frame_stride: int = 1,
        max_videos: int | None = None,
        resample: str = "bilinear",
        *,
        crop: str = "center",
        config: Any = None,
    ):
        from wfvae_jax.data.sources import find_videos

        self.spec = clip_spec(num_frames, resolution, frame_stride, crop, resample, config)
        if max_videos is not None and max_videos < 1:
            raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
        self.root = os.path.abspath(os.fspath(root))
        self.relative = find_videos(self.root)
        if not self.relative:
            raise ValueError(f"no video files (mp4, avi, mkv, mov, webm) under {self.root}")
        self.names = _stems(self.relative)
        self.num_frames, self.resolution, self.frame_stride = num_frames, resolution, frame_stride
        self.max_videos, self.resample = max_videos, resample
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        n = len(self.relative)
        return n if self.max_videos is None else min(n, self.max_videos)

    def describe(self) -> str:
        return f"folder:{self.root}"

    def __iter__(self) -> Iterator[EvalClip]:
        self.skipped = {}
        produced = 0
        for rel, name in zip(self.relative, self.names, strict=True):
            if self.max_videos is not None and produced >= self.max_videos:
                return
            path = os.path.join(self.root, rel)
            try:
                info = probe_video(path)
                video = self.spec.read(path)
            except (ValueError, OSError) as e:
                self.skipped[path] = str(e)
                continue
            produced += 1
            geometry = self.spec.geometry(info.height, info.width).describe()
            yield EvalClip(name, video, self.spec.fps(info), path, geometry)


class TfdsClips:
    """Clips from a prepared TFDS dataset (``wfvae_jax.data.TfdsVideoSource``), records in order.

    Args:
      name, split, data_dir, video_key: passed to ``TfdsVideoSource`` (uint8 frames).
      fps: the dataset's frame rate, used only for the written mp4 files.
      other arguments: as :class:`FolderClips`.

    Raises:
      ValueError: bad settings or the dataset cannot be opened.
    """

    def __init__(
        self,
        name: str,
        split: str,
        num_frames: int,
        resolution: int | tuple[int, int] | None,
        frame_stride: int = 1,
        max_videos: int | None = None,
        data_dir: str | None = None,
        video_key: str = "video",
        fps: float = DEFAULT_FPS,
        resample: str = "bilinear",
        *,
        crop: str = "center",
        config: Any = None,
    ):
        from wfvae_jax.data.sources import TfdsVideoSource

        self.spec = clip_spec(num_frames, resolution, frame_stride, crop, resample, config)
        self.source = TfdsVideoSource(name, split, data_dir, video_key)
        self.name, self.split = name, split
        self.num_frames, self.resolution, self.frame_stride = num_frames, resolution, frame_stride
        self.max_videos, self.fps, self.resample = max_videos, fps, resample
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        n = len(self.source)
        return n if self.max_videos is None else min(n, self.max_videos)

    def describe(self) -> str:
        return f"tfds:{self.name}/{self.split}"

    def __iter__(self) -> Iterator[EvalClip]:
        self.skipped = {}
        span = (self.num_frames - 1) * self.frame_stride + 1
        produced = 0
        for i in range(len(self.source)):
            if self.max_videos is not None and produced >= self.max_videos:
                return
            where = f"tfds:{self.name}/{self.split}[{i}]"
            frames = self.source[i]["video"]
            if frames.shape[0] < span:
                self.skipped[where] = f"only {frames.shape[0]} frames, the clip spans {span}"
                continue
            sp = self.spec
            video = resize_and_crop(
                frames[: span : self.frame_stride],
                sp.resolution,
                sp.crop,
                None,
                sp.resample,
                multiple=sp.multiple,
            )
            produced += 1
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}_{self.split}")
            geometry = sp.geometry(*frames.shape[1:3]).describe()
            yield EvalClip(f"{stem}_{i:06d}", video, self.fps / self.frame_stride, where, geometry)
