"""Evaluation clips: the first ``num_frames`` frames of each video, resized and centre-cropped.

Clip selection follows the reference eval (``ValidVideoDataset`` in
causalvideovae/dataset/video_dataset.py and examples/eval.sh): every video contributes one clip
that starts at its first frame, takes ``num_frames`` frames ``frame_stride`` apart, resizes the
short side to ``resolution`` (antialiased bilinear) and centre-crops a square of that size. The
resolution and crop follow ``wfvae_jax.io.clip_spec.ClipSpec`` (``S``, ``HxW`` or native;
``crop="none"`` keeps the aspect ratio), the one rule every command uses; the videos are a
``wfvae_jax.data.VideoSource`` (a folder or a TFDS dataset). Videos that are too short or cannot
be decoded are skipped and listed with the reason (the reference raises instead); nothing is
skipped silently.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from wfvae_jax.data.tfds import TfdsVideoSource
from wfvae_jax.data.video_source import VideoFiles, VideoSource
from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.decode import DEFAULT_FPS


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


class EvalClips:
    """The first clip of each video of ``source``, as :class:`EvalClip`.

    Args:
      source: the videos (``wfvae_jax.data.VideoFiles``, ``TfdsVideoSource``).
      spec: the clip (:func:`clip_spec`).
      max_videos: stop after this many usable clips (``None``: all).
      fps: the frame rate of sources that state none (TFDS), for the written mp4 files.

    Iterating yields :class:`EvalClip`; ``skipped`` maps each unusable video to its reason.
    ``len()`` is an upper bound (videos that will be tried), for progress bars.
    """

    def __init__(
        self,
        source: VideoSource,
        spec: ClipSpec,
        max_videos: int | None = None,
        fps: float = DEFAULT_FPS,
    ):
        if max_videos is not None and max_videos < 1:
            raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
        self.source, self.spec, self.max_videos, self.fps = source, spec, max_videos, fps
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        n = len(self.source)
        return n if self.max_videos is None else min(n, self.max_videos)

    def describe(self) -> str:
        return self.source.describe()

    def __iter__(self) -> Iterator[EvalClip]:
        self.skipped = {}
        src, spec = self.source, self.spec
        for i, got in src.clips(spec, limit=self.max_videos, skipped=self.skipped):
            fps = (got.fps or self.fps) / spec.frame_stride
            yield EvalClip(src.stem(i), got.clips[0], fps, src.where(i), got.geometry.describe())


class FolderClips(EvalClips):
    """Clips from the video files under a folder (recursive, sorted paths, so runs agree).

    Args:
      root: folder searched with ``wfvae_jax.data.find_videos`` (mp4, avi, mkv, mov, webm).
      num_frames, resolution, frame_stride, crop, config: see :func:`clip_spec`.
      max_videos: stop after this many usable clips (``None``: all).
      resample: ``read_video``'s filter (``"bilinear"`` as the reference).

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
        spec = clip_spec(num_frames, resolution, frame_stride, crop, resample, config)
        super().__init__(VideoFiles(root), spec, max_videos)


class TfdsClips(EvalClips):
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
        spec = clip_spec(num_frames, resolution, frame_stride, crop, resample, config)
        super().__init__(TfdsVideoSource(name, split, data_dir, video_key), spec, max_videos, fps)
