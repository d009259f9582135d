"""Video decoding and probing (PyAV): opening a file, its decodable frames, their count, what
its header says. Clips out of the frames: :mod:`wfvae_jax.io.windows`.

Frame indices count *decodable* frames in
presentation order. A container's header count can differ from that (a variable-rate AVI stores
timestamps with gaps; a truncated file stops early), so every length here comes from decoding
(:func:`count_frames`), never from the header.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterator

import av

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
# The FFmpeg demuxers a video may be read with (those of VIDEO_EXTENSIONS). Others are refused
# before they read anything: an HLS playlist (.m3u8) or ffconcat list, whatever its file name,
# makes FFmpeg open the files or URLs it names; only the file protocol is allowed as well.
VIDEO_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "avi", "matroska", "webm")
_OPEN_OPTIONS = {"format_whitelist": ",".join(VIDEO_FORMATS), "protocol_whitelist": "file"}
_FORMAT_HINT = "pass the video file itself (mp4, mov, avi, mkv or webm)"
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


def _refused_format(path: str) -> VideoFileError:
    """The error for a file whose container is not in :data:`VIDEO_FORMATS`; names a playlist
    or concat list (from its first bytes) as such."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf").lstrip()
    except OSError:
        head = b""
    if head.startswith(b"#EXTM3U"):
        what = "an HLS playlist (m3u8), which names other files or URLs"
    elif head.startswith((b"ffconcat", b"file ")):
        what = "an FFmpeg concat list, which names other files"
    else:
        what = "not a container this project reads"
    return VideoFileError(
        f"refused to read {path}: it is {what} (allowed containers: mp4/mov, avi, mkv/webm)",
        hint=_FORMAT_HINT,
    )


def _check_plain_file(path: str) -> None:
    """Raises unless ``path`` is a regular file (``stat`` never blocks, unlike opening a FIFO)."""
    if "://" in path and not os.path.lexists(path):
        raise VideoFileError(f"refused to read {path}: network URLs are not read", _FORMAT_HINT)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"video file not found: {path} (a symlink to the missing {os.readlink(path)})"
            ) from None
        raise FileNotFoundError(f"video file not found: {path}") from None
    except OSError as e:  # ELOOP, EACCES, ENAMETOOLONG
        raise VideoFileError(
            f"cannot open video {path}: {e.strerror or e}"
            + (" (a symlink loop)" if e.errno == errno.ELOOP else ""),
            hint="pass the video file itself",
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoFileError(
            f"{path} is a directory, not a video file",
            hint="pass one video file (mp4, avi, mkv, mov, webm); a folder of videos goes to "
            "the commands that take --videos DIR",
        )
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise VideoFileError(
            f"{path} is {kind}, not a video file (it is not read: reading could block)",
            hint="pass a regular video file; save a stream to a file first",
        )


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens ``path`` for decoding (a context manager; :func:`decoded_frames` reads it).

    Only a regular file is opened, with FFmpeg's file protocol and the demuxers of
    :data:`VIDEO_FORMATS`: playlists, concat lists and URLs, which make FFmpeg read other files,
    are refused before anything else is read.

    Raises:
      FileNotFoundError: no such file (or a dangling symlink, naming its target).
      VideoFileError: a directory, FIFO, device or symlink loop; a playlist, concat list, URL or
        another container; a file FFmpeg cannot open (the message says when it is a truncated
        MP4) or without a video stream. A ValueError with a ``hint``.
    """
    path = os.fspath(path)
    _check_plain_file(path)
    try:
        container = av.open(os.path.abspath(path), mode="r", options=dict(_OPEN_OPTIONS))
    except av.error.ArgumentError as e:  # EINVAL: a demuxer outside the whitelist
        raise _refused_format(path) from e
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
    Raises ValueError if the very first frame cannot be decoded (nothing usable in the file),
    and :class:`VideoFileError` at a frame whose size differs from the first's.
    """
    stream = container.streams.video[0]
    count, size = 0, None
    try:
        for frame in container.decode(stream):
            count += 1
            if size is None:
                size = (frame.height, frame.width)
            elif (frame.height, frame.width) != size:  # clips need one size
                raise VideoFileError(
                    f"{path}: frame {count - 1} is {frame.width}x{frame.height} but the first "
                    f"frame is {size[1]}x{size[0]}; clips need frames of one size",
                    hint=f"re-encode it at one size (ffmpeg -i IN -vf scale={size[1]}:{size[0]} "
                    "-c:v libx264 OUT.mp4)",
                )
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
