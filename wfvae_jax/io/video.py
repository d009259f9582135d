"""Video decoding, resizing, writing and preview strips (PyAV + Pillow).

Conventions
- Frames are channels-last ``(T, H, W, 3)`` RGB. Model-facing arrays are float32 in ``[-1, 1]``
  (``uint8 / 127.5 - 1``, as the reference's ``2 * x - 1`` on ``[0, 1]`` tensors); files and
  previews hold uint8.
- Frame indices count *decodable* frames in presentation order. A container's header count can
  differ from that (a variable-rate AVI stores timestamps with gaps; a truncated file stops
  early), so every length here comes from decoding (``count_frames``), never from the header.
- Resizing follows the reference data pipeline (``causalvideovae/dataset/video_dataset.py``,
  PKU-YuanGroup/WF-VAE @ d858bee): scale the short side to the target, antialiased, then crop.
  The reference uses torchvision's antialiased bilinear resize; Pillow's ``BILINEAR`` is the same
  kind of filter (a triangle kernel widened by the downscale factor), ``"area"`` is exact box
  averaging. Resizing runs on float32 values, so outputs are not re-quantised to uint8 levels.
- Clip geometry (:func:`clip_geometry`), one rule for every command: ``resolution`` is ``S``
  (short side to S, then a centre crop of S x S), ``(H, W)`` (cover-resize, centre crop H x W) or
  ``None`` (the decoded size); ``crop="none"`` keeps the aspect ratio instead of cropping (the
  long side is rounded to a multiple of ``multiple``). :class:`ClipSpec` bundles these with the
  frame selection (``num_frames``, ``frame_stride``, ``start``) and is what the command-line tools
  build from their shared flags (:func:`add_clip_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
_CROPS = ("center", "random", "none")
CLI_CROPS = ("center", "none")  # what the commands offer (random crops are for training)
DEFAULT_FPS = 25.0  # used when a container states no frame rate


def _open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens ``path`` for decoding; missing file -> FileNotFoundError, unreadable -> ValueError."""
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


def _iter_decoded(container: av.container.InputContainer, path: str) -> Iterator[av.VideoFrame]:
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
    with _open_input(path) as container:
        return sum(1 for _ in _iter_decoded(container, path))


def _target_hw(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, (int, np.integer)):
        size = (int(resolution), int(resolution))
    else:
        size = tuple(int(s) for s in resolution)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resolution must be a positive int or (height, width), got {resolution}")
    return size


def resized_size(height: int, width: int, resolution: int | tuple[int, int]) -> tuple[int, int]:
    """Size ``(h, w)`` after the short-side resize that just covers ``resolution``.

    The side with the larger target/source ratio is set to its target and the other side scaled
    by the same ratio and truncated (never below its target), so a crop of the target size always
    fits. For a square target this is torchvision's ``Resize(int)``, which the reference uses:
    short side = target, long side = ``int(target * long / short)``.
    """
    th, tw = _target_hw(resolution)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if th * width >= tw * height:  # th / height >= tw / width, without float division
        return th, max(tw, int(th * width / height))
    return max(th, int(tw * height / width)), tw


def crop_offsets(
    size: tuple[int, int],
    resolution: int | tuple[int, int],
    crop: str = "center",
    rng: np.random.Generator | None = None,
) -> tuple[int, int]:
    """Top-left ``(y, x)`` of a ``resolution`` crop inside an image of ``size = (h, w)``.

    ``"center"`` puts the corner at ``int(round((h - th) / 2))`` (Python's half-to-even round),
    as the reference's ``center_crop`` (``causalvideovae/dataset/transform.py``); ``"random"``
    draws ``y`` then ``x`` uniformly with ``rng.integers`` (every valid position possible).
    Raises ValueError for an unknown ``crop``, a missing ``rng`` or a target larger than ``size``.
    """
    th, tw = _target_hw(resolution)
    h, w = size
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} does not fit in {h}x{w}")
    if crop == "center":
        return int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    if crop == "random":
        if rng is None:
            raise ValueError('crop="random" needs an rng (np.random.Generator)')
        return int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
    raise ValueError(f"crop must be one of {_CROPS}, got {crop!r}")


def _round_to(x: float, multiple: int) -> int:
    """``x`` rounded to the nearest positive multiple of ``multiple`` (halves go up)."""
    return max(multiple, int(np.floor(x / multiple + 0.5)) * multiple)


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    """How a ``source`` frame becomes the model's frame: resize to ``resized``, then keep the
    ``output``-sized window at ``offset`` (``(y, x)``); all sizes are ``(height, width)``."""

    source: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    output: tuple[int, int]

    @property
    def kept(self) -> tuple[float, float]:
        """Fractions of the resized height and width the crop keeps (1.0, 1.0 without crop)."""
        return self.output[0] / self.resized[0], self.output[1] / self.resized[1]

    def describe(self) -> str:
        """One line for logs, e.g. ``640x272 -> 602x256 -> centre crop 256x256 (keeps 43% of
        the width)``; sizes are ``WxH`` as video tools print them."""

        def wh(hw: tuple[int, int]) -> str:
            return f"{hw[1]}x{hw[0]}"

        steps = [wh(self.source)]
        if self.resized != self.source:
            steps.append(wh(self.resized))
        if self.output != self.resized:
            kh, kw = self.kept
            lost = [f"{round(100 * k)}% of the {n}" for k, n in ((kh, "height"), (kw, "width"))]
            lost = [t for t, k in zip(lost, (kh, kw), strict=True) if k < 1.0]
            steps.append(f"crop {wh(self.output)} at y={self.offset[0]}, x={self.offset[1]}")
            return " -> ".join(steps) + f" (keeps {' and '.join(lost)})"
        src_aspect = self.source[1] / self.source[0]
        out_aspect = self.output[1] / self.output[0]
        if self.resized == self.source:
            return steps[0] + " (decoded size)"
        return " -> ".join(steps) + f" (no crop; aspect {src_aspect:.3f} -> {out_aspect:.3f})"


def clip_geometry(
    height: int,
    width: int,
    resolution: int | tuple[int, int] | None,
    crop: str = "center",
    rng: np.random.Generator | None = None,
    multiple: int = 1,
) -> ClipGeometry:
    """The resize and crop that turn a ``height x width`` frame into the requested clip size.

    Args:
      height, width: decoded frame size.
      resolution: ``S`` (short side S; with a crop, an S x S window), ``(H, W)``, or ``None``
        (the decoded size, cut or rounded to multiples of ``multiple``).
      crop: ``"center"`` (cover-resize, then the centred window, as the reference's
        ``center_crop``), ``"random"`` (a window drawn with ``rng``) or ``"none"``: no crop;
        ``S`` keeps the aspect ratio (short side S, long side scaled and rounded to a multiple of
        ``multiple``), ``(H, W)`` resizes to exactly that (the aspect ratio may change), ``None``
        rounds both sides to multiples of ``multiple``.
      multiple: sizes the output must be multiples of (8 for WF-VAE; 1 for any size).
    Returns:
      :class:`ClipGeometry`.
    Raises:
      ValueError: an unknown ``crop``, a non-positive size, or a ``random`` crop without ``rng``.
    """
    if crop not in _CROPS:
        raise ValueError(f"crop must be one of {_CROPS}, got {crop!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    src = (int(height), int(width))
    m = multiple
    if resolution is None:
        if crop == "none":
            out = (_round_to(height, multiple), _round_to(width, multiple))
            return ClipGeometry(src, out, (0, 0), out)
        out = (max(m, height // m * m), max(m, width // m * m))
        if out[0] > height or out[1] > width:  # a frame smaller than one multiple: scale up
            resized = resized_size(height, width, out)
        else:
            resized = src
    elif crop == "none":
        if isinstance(resolution, (int, np.integer)):
            s = int(resolution)
            if s < 1:
                raise ValueError(f"resolution must be positive, got {resolution}")
            if height <= width:
                out = (s, _round_to(width * s / height, multiple))
            else:
                out = (_round_to(height * s / width, multiple), s)
        else:
            out = _target_hw(resolution)
        return ClipGeometry(src, out, (0, 0), out)
    else:
        out = _target_hw(resolution)
        resized = resized_size(height, width, out)
    offset = crop_offsets(resized, out, crop, rng)
    return ClipGeometry(src, resized, offset, out)


def _resize_frame(frame: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (h, w, 3) in [0, 255].

    Each channel is resized as a float32 ("F" mode) image: Pillow's uint8 path rounds after each
    of its two separable passes (up to one level off, biased upwards), the float path does not.
    """
    if frame.shape[:2] == size:
        return frame.astype(np.float32)
    filt = _RESAMPLE[resample]
    out = np.empty((size[0], size[1], frame.shape[2]), np.float32)
    for c in range(frame.shape[2]):
        image = Image.fromarray(np.ascontiguousarray(frame[..., c], dtype=np.float32))
        out[..., c] = np.asarray(image.resize((size[1], size[0]), resample=filt))
    # Bicubic and Lanczos kernels have negative lobes and can overshoot the uint8 range.
    return np.clip(out, 0.0, 255.0, out=out)


def _check_resample(resample: str) -> None:
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {tuple(_RESAMPLE)}, got {resample!r}")


def resize_and_crop(
    frames: np.ndarray,
    resolution: int | tuple[int, int] | None,
    crop: str = "center",
    rng: np.random.Generator | None = None,
    resample: str = "bilinear",
    *,
    multiple: int = 1,
) -> np.ndarray:
    """Resize then crop (:func:`clip_geometry`): uint8 ``(T, H, W, 3)`` -> float32 in [-1, 1].

    One crop position is used for all frames. ``resolution=None`` with ``multiple=1`` only
    rescales the values. Raises ValueError for a bad shape/dtype, ``crop`` or ``resample``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    _check_resample(resample)
    g = clip_geometry(frames.shape[1], frames.shape[2], resolution, crop, rng, multiple)
    if g.output == g.source:
        return to_float(frames)
    (y, x), (th, tw) = g.offset, g.output
    out = np.empty((frames.shape[0], th, tw, 3), np.float32)
    for i, frame in enumerate(frames):
        out[i] = _resize_frame(frame, g.resized, resample)[y : y + th, x : x + tw]
    return _scale_255(out)


def _scale_255(x: np.ndarray) -> np.ndarray:
    """float32 [0, 255] -> [-1, 1], in place."""
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]`` (``x / 127.5 - 1``), any shape."""
    return np.asarray(frames, np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float ``[-1, 1]`` -> uint8 (``round((x + 1) * 127.5)``, clipped); uint8 passes through."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [-1, 1], got dtype {frames.dtype}")
    return np.clip(np.rint((frames.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


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
    if crop not in _CROPS:
        raise ValueError(f"crop must be one of {_CROPS}, got {crop!r}")
    if crop == "random" and rng is None:
        raise ValueError('crop="random" needs an rng (np.random.Generator)')
    _check_resample(resample)
    if resolution is not None:
        _target_hw(resolution)

    frames: list[np.ndarray] = []
    out = None  # with a known num_frames, frames go straight into one preallocated array
    count = decoded = 0
    geometry = None
    with _open_input(path) as container:
        for index, frame in enumerate(_iter_decoded(container, path)):
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
            if geometry.output == geometry.source:
                rgb = rgb.astype(np.float32)
            else:
                (y, x), (th, tw) = geometry.offset, geometry.output
                rgb = _resize_frame(rgb, geometry.resized, resample)[y : y + th, x : x + tw]
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
    return _scale_255(out if out is not None else np.stack(frames))


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
    with _open_input(path) as container:
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        if not height or not width:
            first = next(_iter_decoded(container, path), None)
            if first is None:
                raise ValueError(f"cannot decode video {path}: no frames")
            height, width = first.height, first.width
        rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    known = fps > 0
    return VideoInfo(path, int(height), int(width), fps if known else DEFAULT_FPS, known)


_RESOLUTION_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_resolution(text: str | int | None) -> int | tuple[int, int] | None:
    """``"256"`` -> 256, ``"256x448"`` -> ``(256, 448)`` (height x width), ``"native"`` -> None.

    Raises ValueError naming the accepted forms.
    """
    if text is None or isinstance(text, (int, np.integer)):
        return None if text is None else int(text)
    t = str(text).strip().lower()
    if t == "native":
        return None
    if t.isdigit():
        return int(t)
    m = _RESOLUTION_RE.match(t)
    if m:
        return int(m.group(1)), int(m.group(2))
    raise ValueError(
        f"resolution must be S (short side), HxW (e.g. 256x448) or native, got {text!r}"
    )


def format_resolution(resolution: int | tuple[int, int] | None) -> str:
    """Inverse of :func:`parse_resolution`."""
    if resolution is None:
        return "native"
    if isinstance(resolution, (int, np.integer)):
        return str(int(resolution))
    return f"{resolution[0]}x{resolution[1]}"


def _nearest_multiples(v: int, m: int) -> list[int]:
    """The positive multiples of ``m`` nearest ``v`` (one if ``v`` is one or below ``m``)."""
    lo = v // m * m
    return [lo] if lo == v and v >= m else [m] if lo < m else [lo, lo + m]


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Which frames of a video, at which size: the shared video options of every command.

    Attributes:
      num_frames: frames per clip (``None``: to the end of the video). The model's frame-count
        rule is checked by :meth:`check_model` (``1 + 4k``, or ``1 + 8k`` for 8x-temporal models).
      frame_stride: step between frames, in decoded frames (output fps = source fps / stride).
      start: first decoded frame.
      resolution: ``S``, ``(H, W)`` or ``None`` (decoded size); see :func:`clip_geometry`.
      crop: ``"center"`` or ``"none"`` (keep the aspect ratio); ``"random"`` for training.
      resample: :func:`read_video`'s filter.
      multiple: every output size is a multiple of this (WF-VAE: 8).
    Raises (at construction):
      ValueError: a bad value, or a resolution that is not a multiple of ``multiple`` (the message
        names the nearest valid ones).
    """

    num_frames: int | None = 33
    frame_stride: int = 1
    start: int = 0
    resolution: int | tuple[int, int] | None = 256
    crop: str = "center"
    resample: str = "bilinear"
    multiple: int = 8

    def __post_init__(self) -> None:
        res = self.resolution
        if res is not None and not isinstance(res, (int, np.integer)):
            object.__setattr__(self, "resolution", _target_hw(res))
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.crop not in _CROPS:
            raise ValueError(f"crop must be one of {CLI_CROPS}, got {self.crop!r}")
        _check_resample(self.resample)
        sizes = [] if res is None else [res] if isinstance(res, (int, np.integer)) else list(res)
        for v in sizes:
            if v < 1 or v % self.multiple:
                near = " or ".join(map(str, _nearest_multiples(v, self.multiple)))
                raise ValueError(
                    f"resolution {format_resolution(res)}: sizes must be positive multiples of "
                    f"{self.multiple}, got {v}; nearest valid: {near}"
                )

    @property
    def span(self) -> int | None:
        """Decoded frames the clip covers, ``(num_frames - 1) * frame_stride + 1``."""
        return None if self.num_frames is None else (self.num_frames - 1) * self.frame_stride + 1

    def geometry(self, height: int, width: int) -> ClipGeometry:
        """The resize/crop for a ``height x width`` source (:func:`clip_geometry`)."""
        crop = "center" if self.crop == "random" else self.crop
        return clip_geometry(height, width, self.resolution, crop, None, self.multiple)

    def check_model(self, config: Any, flag: str = "--num_frames") -> None:
        """Checks ``num_frames`` against the model's rule (``config.check_num_frames``).

        Raises:
          wfvae_jax.errors.UserError: the message names the nearest valid count, the hint
            the flag to pass (a command-line error: exit 2).
        """
        if self.num_frames is None:
            return
        try:
            config.check_num_frames(self.num_frames, flag)
        except ValueError as e:
            from wfvae_jax.errors import UserError

            hint = f"pass {flag} {config.nearest_num_frames(self.num_frames)}"
            raise UserError(str(e), hint=hint) from e

    def read(
        self, path: str | os.PathLike, rng: np.random.Generator | None = None, config: Any = None
    ) -> np.ndarray:
        """The clip of ``path``: float32 ``(T, H, W, 3)`` in [-1, 1] (:func:`read_video`).

        With the model's ``config``, a video too short for the clip raises
        ``wfvae_jax.errors.UserError`` whose hint names the largest ``--num_frames`` that fits;
        otherwise :class:`ClipTooShortError` (a ValueError).
        """
        if config is not None:
            try:
                return self.read(path, rng)
            except ClipTooShortError as e:
                from wfvae_jax.errors import UserError

                raise UserError(str(e), hint=e.hint(config)) from e
        return read_video(
            path,
            self.num_frames,
            self.frame_stride,
            self.start,
            self.resolution,
            self.crop,
            rng=rng,
            resample=self.resample,
            multiple=self.multiple,
        )

    def fps(self, info: VideoInfo) -> float:
        """The clip's frame rate: the source's divided by ``frame_stride``."""
        return info.fps / self.frame_stride

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (``resolution`` as :func:`format_resolution` writes it)."""
        d = dataclasses.asdict(self)
        d["resolution"] = format_resolution(self.resolution)
        return d


def add_clip_args(
    parser: argparse.ArgumentParser | Any,
    *,
    num_frames: int = 33,
    resolution: str = "256",
    start: bool = True,
) -> None:
    """Adds the shared video flags: ``--num_frames --frame_stride [--start] --resolution --crop``.

    Read them back with :func:`clip_spec_from_args`. ``parser`` may be an argument group.
    """
    parser.add_argument(
        "--num_frames",
        type=int,
        default=num_frames,
        help="frames per clip, 1 + 4k (1 + 8k for 8x-temporal models)",
    )
    parser.add_argument("--frame_stride", type=int, default=1, help="take every n-th decoded frame")
    if start:
        parser.add_argument("--start", type=int, default=0, help="first decoded frame")
    parser.add_argument(
        "--resolution",
        default=resolution,
        help="S: short side S (then a centre S x S crop unless --crop none); HxW: exactly "
        "H x W; native: the decoded size. Sizes are multiples of 8",
    )
    parser.add_argument(
        "--crop",
        choices=CLI_CROPS,
        default="center",
        help="center: cut to the size (the log says how much is lost); none: keep the whole "
        "frame and its aspect ratio (the long side rounds to a multiple of 8)",
    )


def clip_spec_from_args(args: argparse.Namespace, **overrides: Any) -> ClipSpec:
    """The :class:`ClipSpec` of the flags :func:`add_clip_args` added.

    Raises:
      wfvae_jax.errors.UserError: a bad flag value, with a hint naming a valid one.
    """
    from wfvae_jax.errors import UserError

    try:
        resolution = parse_resolution(args.resolution)
    except ValueError as e:
        raise UserError(f"--resolution: {e}", hint="e.g. --resolution 256 or 256x448") from e
    fields = dict(
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        start=getattr(args, "start", 0),
        resolution=resolution,
        crop=args.crop,
    )
    fields.update(overrides)
    try:
        return ClipSpec(**fields)
    except ValueError as e:
        msg, hint = str(e), None
        if msg.startswith("resolution"):
            msg = "--" + msg
            m = fields.get("multiple", ClipSpec.multiple)
            sizes = [resolution] if isinstance(resolution, int) else list(resolution)
            fixed = [_nearest_multiples(v, m)[0] for v in sizes]
            fixed = fixed[0] if len(fixed) == 1 else tuple(fixed)
            hint = f"pass --resolution {format_resolution(fixed)}"
        elif msg.startswith(("num_frames", "frame_stride", "start")):
            msg = "--" + msg
        raise UserError(msg, hint=hint) from e


def _encoder_name() -> str:
    """``libx264`` when PyAV's FFmpeg build has it, else FFmpeg's native ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except (av.error.FFmpegError, ValueError):
        return "mpeg4"


def _pad_even(frames: np.ndarray) -> np.ndarray:
    # yuv420p subsamples chroma 2x2, so encoders need even sizes; edge-pad rather than crop so no
    # content is lost.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Writes ``frames`` (T, H, W, 3) RGB (uint8, or float in ``[-1, 1]``) to a video file.

    The container follows the file extension (``.mp4`` intended; ``.mkv``/``.mov`` also work).

    Encoder: libx264 (CRF 17, near-transparent) if available, else mpeg4 at high quality; pixel
    format yuv420p, so odd heights/widths are edge-padded by one pixel to even sizes.
    Raises ValueError for a bad shape, dtype or fps.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    to_uint8(frames[:0])  # dtype check before a file is created
    height, width = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
    codec = _encoder_name()
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "medium"}
        else:
            stream.bit_rate = int(8 * height * width * float(fps))
        for i in range(frames.shape[0]):
            # Frame by frame: a long float clip is never converted (copied) as a whole.
            rgb = _pad_even(to_uint8(frames[i : i + 1]))[0]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def abs_error_frames(a: np.ndarray, b: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Per-pixel ``|a - b|`` of two ``[-1, 1]`` float videos as uint8 for ``save_strip_png``.

    ``|a - b|`` spans ``[0, 2]``; it maps to ``[0, 255]`` times ``gain`` (clipped), so black means
    equal and ``gain=4`` makes small errors visible. Raises ValueError for mismatched shapes.
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return np.clip(np.rint(np.abs(a - b) * (127.5 * gain)), 0, 255).astype(np.uint8)


def save_strip_png(
    path: str | os.PathLike,
    rows: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    num_samples: int = 8,
    gap: int = 2,
) -> None:
    """Saves a PNG grid: one row per video, ``num_samples`` frames spread evenly over time.

    Args:
      path: output ``.png`` path.
      rows: videos ``(T, H, W, 3)``, uint8 or float in ``[-1, 1]`` (e.g. input, reconstruction,
        ``abs_error_frames(input, reconstruction)``); all rows share ``(H, W)``, ``T`` may differ.
      labels: one text per row, drawn in a left margin; ``None`` draws no margin.
      num_samples: frames shown per row (fewer if a row is shorter): indices
        ``round(linspace(0, T - 1, n))``, so the first and last frames are always shown.
      gap: pixels of black between cells.

    Raises:
      ValueError: no rows, a row of the wrong shape, rows of different sizes, or ``labels`` of a
        different length than ``rows``.
    """
    if not rows:
        raise ValueError("save_strip_png needs at least one row")
    rows = [to_uint8(r) for r in rows]
    for r in rows:
        if r.ndim != 4 or r.shape[-1] != 3 or r.shape[0] < 1:
            raise ValueError(f"each row must be (T, H, W, 3) with T >= 1, got {r.shape}")
    h, w = rows[0].shape[1:3]
    if any(r.shape[1:3] != (h, w) for r in rows):
        raise ValueError(f"rows differ in frame size: {[r.shape[1:3] for r in rows]}")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 0
    if labels is not None:
        margin = max(draw_probe.textbbox((0, 0), str(t))[2] for t in labels) + 2 * gap + 4
    cols = max(min(num_samples, r.shape[0]) for r in rows)
    canvas = Image.new(
        "RGB", (margin + cols * (w + gap) + gap, len(rows) * (h + gap) + gap), (0, 0, 0)
    )
    draw = ImageDraw.Draw(canvas)
    for i, r in enumerate(rows):
        top = gap + i * (h + gap)
        n = min(num_samples, r.shape[0])
        for j, t in enumerate(np.rint(np.linspace(0, r.shape[0] - 1, n)).astype(int)):
            canvas.paste(Image.fromarray(r[t]), (margin + gap + j * (w + gap), top))
        if labels is not None:
            draw.text((gap + 2, top + max(0, h // 2 - 6)), str(labels[i]), fill=(255, 255, 255))
    canvas.save(os.fspath(path), format="PNG")
