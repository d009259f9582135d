"""Clips out of decoded frames: windows of ``num_frames`` frames ``frame_stride`` apart, resized
and cropped (:func:`cut_windows`, one pass over a stream for any number of windows), and one clip
of a file (:func:`read_video`).

Clips are float32 ``(T, H, W, 3)`` in ``[-1, 1]``; frame indices count decodable frames
(:mod:`wfvae_jax.io.decode`), geometry and values are :mod:`wfvae_jax.io.frames`'.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from wfvae_jax.io.decode import decoded_frames, open_video
from wfvae_jax.io.frames import (
    CROPS,
    ClipGeometry,
    apply_geometry,
    check_resample,
    clip_geometry,
    scale_255,
    target_size,
)


class ClipTooShortError(ValueError):
    """A video has fewer frames than a clip asks for; ``available`` frames fit (at its stride
    and start). A ValueError, so callers that skip bad clips need not know it."""

    def __init__(self, message: str, available: int):
        super().__init__(message)
        self.available = available

    def hint(self, config: Any, flag: str = "--num_frames") -> str:
        """The largest frame count the model accepts that fits, e.g. ``pass --num_frames 17``."""
        n = self.available
        while n > 0 and not config.is_valid_num_frames(n):
            n -= 1
        if n < 1:
            return "use a smaller --start or --frame_stride, or a longer video"
        return f"pass {flag} {n} (or fewer), or a smaller --frame_stride"


@dataclasses.dataclass
class Windows:
    """What :func:`cut_windows` read.

    Attributes:
      clips: the complete windows, float32 ``(num_frames, h, w, 3)`` in [-1, 1], in start order.
      starts: their starts.
      counts: frames each requested window got (``num_frames`` when complete), in request order.
      size: the source frame size ``(H, W)`` (None without frames).
      geometry: the resize and crop used (None when no frame was kept).
      frames_seen: frames read from the stream.
    """

    clips: list[np.ndarray]
    starts: list[int]
    counts: list[int]
    size: tuple[int, int] | None
    geometry: ClipGeometry | None
    frames_seen: int


def _rgb(frame: Any) -> np.ndarray:
    return frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")


def _size(frame: Any) -> tuple[int, int]:
    if isinstance(frame, np.ndarray):
        return int(frame.shape[0]), int(frame.shape[1])
    return int(frame.height), int(frame.width)


def cut_windows(
    frames: Iterable[Any],
    starts: Sequence[int],
    num_frames: int | None,
    frame_stride: int = 1,
    resolution: int | tuple[int, int] | None = None,
    crop: str = "center",
    *,
    rng: np.random.Generator | None = None,
    resample: str = "bilinear",
    multiple: int = 1,
) -> Windows:
    """Cuts a window of ``num_frames`` frames ``frame_stride`` apart at each of ``starts`` out of
    a stream of decodable frames, in one pass (windows may overlap).

    Args:
      frames: ``av.VideoFrame`` or uint8 ``(H, W, 3)`` arrays, in order.
      starts: index of each window's first frame in the stream.
      num_frames: frames per window; ``None``: one window, every ``frame_stride``-th frame to the
        end of the stream.
      resolution, crop, multiple: :func:`clip_geometry`; ``rng`` draws a random crop, once, at
        the first frame a window keeps, so every frame of every window shares it.
      resample: the resize filter (:func:`wfvae_jax.io.frames.apply_geometry`).
    Returns:
      :class:`Windows`; each kept frame is converted, resized and cropped once. Reading stops as
      soon as every window is complete.
    Raises:
      ValueError: ``num_frames=None`` with other than one start; from :func:`clip_geometry`.
    """
    starts = [int(s) for s in starts]
    n = len(starts)
    if num_frames is None and n != 1:
        raise ValueError(f"num_frames=None cuts one window to the end, got {n} starts")
    buffers: list[Any] = [None] * n
    counts = [0] * n
    geometry, size, seen, left = None, None, 0, n
    for index, frame in enumerate(frames):
        seen = index + 1
        if size is None:
            size = _size(frame)
        wanted = [
            j
            for j, s in enumerate(starts)
            if counts[j] != num_frames and index >= s and (index - s) % frame_stride == 0
        ]
        if not wanted:
            continue
        rgb = _rgb(frame)
        if geometry is None:
            geometry = clip_geometry(rgb.shape[0], rgb.shape[1], resolution, crop, rng, multiple)
        out = apply_geometry(rgb, geometry, resample)
        for j in wanted:
            if num_frames is None:
                buffers[j] = buffers[j] or []
                buffers[j].append(out)
            else:
                if buffers[j] is None:  # one preallocated array per window
                    buffers[j] = np.empty((num_frames, *geometry.output, 3), np.float32)
                buffers[j][counts[j]] = out
            counts[j] += 1
            left -= counts[j] == num_frames
        if num_frames is not None and left == 0:
            break
    done = [j for j in range(n) if counts[j] and (num_frames is None or counts[j] == num_frames)]
    clips = [scale_255(np.stack(buffers[j]) if num_frames is None else buffers[j]) for j in done]
    return Windows(clips, [starts[j] for j in done], counts, size, geometry, seen)


def read_video(
    path: str | os.PathLike,
    num_frames: int | None,
    frame_stride: int = 1,
    start: int = 0,
    resolution: int | tuple[int, int] | None = None,
    crop: str = "center",
    *,
    rng: np.random.Generator | None = None,
    resample: str = "bilinear",
    multiple: int = 1,
) -> np.ndarray:
    """Decodes frames ``start, start + frame_stride, ...`` of ``path`` as float32 in ``[-1, 1]``.

    Args:
      path: video file (any container/codec PyAV's FFmpeg decodes); the first video stream is used.
      num_frames: frames to return; ``None`` takes every ``frame_stride``-th frame to the end.
      frame_stride: step between returned frames, in decoded frames.
      start: index of the first returned frame among decodable frames.
      resolution: ``None`` keeps the decoded size (see ``multiple``); an int ``S`` resizes the
        short side to S (antialiased) and crops ``S x S``; ``(height, width)`` cover-resizes and
        crops that. See :func:`clip_geometry`.
      crop: ``"center"``, ``"random"`` (needs ``rng``; one position for all frames) or
        ``"none"`` (no crop: keep the aspect ratio; see :func:`clip_geometry`).
      rng: generator for the random crop.
      resample: ``"bilinear"`` (antialiased, as the reference), ``"area"``, ``"bicubic"`` or
        ``"lanczos"``.
      multiple: output sizes are multiples of this where the geometry rounds (8 for WF-VAE).

    Returns:
      float32 ``(T, H, W, 3)`` RGB in ``[-1, 1]``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: bad arguments; the file cannot be opened or decoded (names the path and the
        decoder error); fewer decodable frames than requested (says how many there are).
    """
    path = os.fspath(path)
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if crop == "random" and rng is None:
        raise ValueError('crop="random" needs an rng (np.random.Generator)')
    check_resample(resample)
    if resolution is not None:
        target_size(resolution)
    with open_video(path) as container:
        w = cut_windows(
            decoded_frames(container, path),
            [start],
            num_frames,
            frame_stride,
            resolution,
            crop,
            rng=rng,
            resample=resample,
            multiple=multiple,
        )
    if not w.clips:
        need = start + (1 if num_frames is None else (num_frames - 1) * frame_stride + 1)
        raise ClipTooShortError(
            f"{path}: only {w.frames_seen} decodable frames, but start={start}, "
            f"num_frames={num_frames}, frame_stride={frame_stride} need {need}",
            available=w.counts[0],
        )
    return w.clips[0]
