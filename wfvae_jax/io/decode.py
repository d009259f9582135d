"""Video decoding and probing (PyAV): decodable frames, their count, header facts, clips.

Frames are channels-last ``(T, H, W, 3)`` RGB; clips come back as float32 in ``[-1, 1]`` (frame
geometry and values: :mod:`wfvae_jax.io.frames`). Frame indices count *decodable* frames in
presentation order. A container's header count can differ from that (a variable-rate AVI stores
timestamps with gaps; a truncated file stops early), so every length here comes from decoding
(:func:`count_frames`), never from the header.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from wfvae_jax.io.frames import (
    CROPS,
    apply_geometry,
    check_resample,
    clip_geometry,
    scale_255,
    target_size,
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
DEFAULT_FPS = 25.0  # used when a container states no frame rate


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens ``path`` for decoding (a context manager; :func:`decoded_frames` reads it).

    Raises:
      FileNotFoundError: no such file. ValueError: it cannot be opened or has no video stream.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(path, mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot open video {path}: {type(e).__name__}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path}")
    return container


def decoded_frames(container: av.container.InputContainer, path: str) -> Iterator[av.VideoFrame]:
    """Yields decodable frames of the first video stream, stopping at EOF or the first error.

    A decoder error ends the stream instead of raising, so the frames before a damaged tail stay
    usable; ``count_frames`` and ``read_video`` share this rule and therefore agree on lengths.
    Raises ValueError if the very first frame cannot be decoded (nothing usable in the file).
    """
    stream = container.streams.video[0]
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except (av.error.FFmpegError, OSError) as e:
        if count == 0:
            raise ValueError(f"cannot decode video {path}: {type(e).__name__}: {e}") from e


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable frames of the first video stream of ``path`` (decodes the whole file).

    Header frame counts are not trusted: e.g. ``tree.avi`` (OpenCV samples) declares 444 frames,
    of which 68 decode. Decoding stops at the first decoder error; the frames before it count.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file cannot be opened, has no video stream, or its first frame fails to
        decode (the message names the path and the decoder error).
    """
    path = os.fspath(path)
    with open_video(path) as container:
        return sum(1 for _ in decoded_frames(container, path))


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

    frames: list[np.ndarray] = []
    out = None  # with a known num_frames, frames go straight into one preallocated array
    count = decoded = 0
    geometry = None
    with open_video(path) as container:
        for index, frame in enumerate(decoded_frames(container, path)):
            decoded = index + 1
            if index < start or (index - start) % frame_stride:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            if geometry is None:
                # The crop position is drawn once, from the first frame's size, so all frames
                # share it (a video's frames all have the stream's size).
                geometry = clip_geometry(
                    rgb.shape[0], rgb.shape[1], resolution, crop, rng, multiple
                )
                if num_frames is not None:
                    out = np.empty((num_frames, *geometry.output, 3), np.float32)
            rgb = apply_geometry(rgb, geometry, resample)
            if out is not None:
                out[count] = rgb
            else:
                frames.append(rgb)
            count += 1
            if num_frames is not None and count == num_frames:
                break
    if not count or (num_frames is not None and count < num_frames):
        need = start + (1 if num_frames is None else (num_frames - 1) * frame_stride + 1)
        raise ClipTooShortError(
            f"{path}: only {decoded} decodable frames, but start={start}, "
            f"num_frames={num_frames}, frame_stride={frame_stride} need {need}",
            available=count,
        )
    return scale_255(out if out is not None else np.stack(frames))


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


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame size ``(height, width)`` and ``fps``.

    ``fps`` is the stream's average frame rate, or :data:`DEFAULT_FPS` when the container states
    none (``fps_known`` is then False). Frame counts are not here: headers get them wrong, see
    :func:`count_frames`.
    """

    path: str
    height: int
    width: int
    fps: float
    fps_known: bool


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Reads ``path``'s header (and its first frame if the header has no size).

    Raises:
      FileNotFoundError: no such file. ValueError: not a video / cannot be opened or decoded.
    """
    path = os.fspath(path)
    with open_video(path) as container:
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        if not height or not width:
            first = next(decoded_frames(container, path), None)
            if first is None:
                raise ValueError(f"cannot decode video {path}: no frames")
            height, width = first.height, first.width
        rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    known = fps > 0
    return VideoInfo(path, int(height), int(width), fps if known else DEFAULT_FPS, known)
