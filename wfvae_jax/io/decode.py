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
# Top-level boxes an MP4/MOV file may start with (ISO/IEC 14496-12; QuickTime).
_MP4_FIRST_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


class VideoFileError(ValueError):
    """A path that is not a readable video (a directory, a truncated or damaged file, no video
    stream); ``hint`` says what to do (``commands.errors.run`` prints it on a ``hint:`` line)."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def _truncated_mp4(path: str) -> bool:
    """Whether an MP4/MOV file ends inside one of its boxes, or before its ``moov`` box (the index
    a player needs, which muxers write last): what an interrupted download or copy leaves."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            pos, has_moov = 0, False
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if pos == 0 and kind not in _MP4_FIRST_BOXES:
                    return False  # not an MP4/MOV file
                if n == 1:  # a 64-bit size follows the type
                    n = int.from_bytes(head[8:16], "big")
                elif n == 0:  # the box runs to the end of the file
                    n = size - pos
                if n < 8:
                    return False
                has_moov |= kind == b"moov"
                if pos + n > size:
                    return True
                pos += n
    except OSError:
        return False
    return pos > 0 and not has_moov


def _truncated(path: str) -> VideoFileError:
    return VideoFileError(
        f"cannot open video {path}: the file is truncated (it ends before the index a player "
        "needs, as an interrupted download or copy leaves it)",
        hint="download or copy it again; an MP4 cut short before its index cannot be read",
    )


def _unreadable(path: str, e: BaseException) -> VideoFileError:
    """The error for a file FFmpeg cannot open: truncated, damaged, or not a video."""
    if _truncated_mp4(path):
        return _truncated(path)
    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return VideoFileError(
        f"cannot open video {path}: the file is damaged, incomplete or not a video (FFmpeg: "
        f"{reason})",
        hint=f"check it plays (ffprobe {path}); download or copy it again, or re-encode a "
        "damaged file (ffmpeg -i IN -c:v libx264 OUT.mp4)",
    )


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens ``path`` for decoding (a context manager; :func:`decoded_frames` reads it).

    Raises:
      FileNotFoundError: no such file.
      VideoFileError: a directory; a file FFmpeg cannot open (the message says when it is a
        truncated MP4) or without a video stream. A ValueError with a ``hint``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise VideoFileError(
            f"{path} is a directory, not a video file",
            hint="pass one video file (mp4, avi, mkv, mov, webm); a folder of videos goes to "
            "the commands that take --videos DIR",
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(path, mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, e) from e
    if not container.streams.video:
        container.close()
        if _truncated_mp4(path):  # cut inside its index: FFmpeg finds no stream
            raise _truncated(path)
        raise VideoFileError(
            f"no video stream in {path}", hint="pass a video file (this one has no video track)"
        )
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
            reason = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
            raise VideoFileError(
                f"cannot decode video {path}: its first frame is damaged (FFmpeg: {reason})",
                hint="re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) or use another file",
            ) from e


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
