"""Video decoding and probing (PyAV): opening a file, its decodable frames, their count, what
its header says. Clips out of the frames: :mod:`wfvae_jax.io.windows`.

Frame indices count *decodable* frames in
presentation order. A container's header count can differ from that (a variable-rate AVI stores
timestamps with gaps; a truncated file stops early), so every length here comes from decoding
(:func:`count_frames`), never from the header.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import av

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


def frame_rate(container: av.container.InputContainer) -> float:
    """The first video stream's frame rate (its average, else FFmpeg's guess); 0.0 when the
    container states none."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


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
        fps = frame_rate(container)
    known = fps > 0
    return VideoInfo(path, int(height), int(width), fps if known else DEFAULT_FPS, known)
