"""Training and held-out evaluation data for the train loop.

Held-out clips must never reach training: :class:`FolderSubset` indexes a video folder without
the evaluation files (and without any files named in ``exclude``, e.g. a re-encoded copy of an
evaluation video), and :func:`load_eval_clips` reads fixed, center-cropped windows of the
evaluation files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from wfvae_jax.data import VideoFolderSource, window_span
from wfvae_jax.video_io import count_frames, read_video


class FolderSubset(VideoFolderSource):
    """A :class:`VideoFolderSource` without the files in ``exclude``.

    Args:
      root: folder of training videos (searched recursively).
      exclude: paths (absolute, or relative to ``root``) or base names of files to leave out.
      min_frames, cache_dir: as :class:`VideoFolderSource`.
    Raises:
      ValueError: no usable video remains.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        exclude: Sequence[str] = (),
        min_frames: int = 1,
        cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__(root, min_frames=min_frames, cache_dir=cache_dir)
        real = {os.path.realpath(os.path.join(self.root, e)) for e in exclude}
        names = {os.path.basename(e) for e in exclude}
        keep = [
            i
            for i, p in enumerate(self.paths)
            if os.path.realpath(p) not in real and os.path.basename(p) not in names
        ]
        self.excluded = [self.paths[i] for i in range(len(self.paths)) if i not in keep]
        self.paths = [self.paths[i] for i in keep]
        self.frames = [self.frames[i] for i in keep]
        if not self.paths:
            raise ValueError(f"no training video left under {self.root} after excluding {exclude}")


def load_eval_clips(
    files: Sequence[str],
    *,
    num_frames: int,
    resolution: int,
    frame_stride: int = 1,
    clips_per_video: int = 2,
) -> np.ndarray:
    """Fixed evaluation windows: ``clips_per_video`` evenly spaced windows of each file.

    Returns:
      float32 ``(len(files) * clips_per_video, num_frames, resolution, resolution, 3)`` in
      [-1, 1]; short side resized to ``resolution`` (antialiased bilinear), center crop.
    Raises:
      ValueError: no files, or a file shorter than one window.
    """
    if not files:
        raise ValueError("eval.files is empty: name at least one held-out video")
    span = window_span(num_frames, frame_stride)
    clips = []
    for path in files:
        total = count_frames(path)
        if total < span:
            raise ValueError(f"{path}: {total} frames, fewer than one eval window ({span})")
        for start in np.linspace(0, total - span, clips_per_video).round().astype(int):
            clips.append(
                read_video(
                    path,
                    num_frames,
                    frame_stride=frame_stride,
                    start=int(start),
                    resolution=resolution,
                    crop="center",
                )
            )
    return np.stack(clips)
