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
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from fractions import Fraction

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
_CROPS = ("center", "random")


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
) -> np.ndarray:
    """Short-side resize then crop: uint8 ``(T, H, W, 3)`` -> float32 ``(T, th, tw, 3)`` in [-1, 1].

    One crop position is used for all frames. ``resolution=None`` only rescales the values.
    Raises ValueError for a bad shape/dtype, ``crop`` or ``resample``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    if resolution is None:
        return to_float(frames)
    _check_resample(resample)
    th, tw = _target_hw(resolution)
    size = resized_size(frames.shape[1], frames.shape[2], (th, tw))
    y, x = crop_offsets(size, (th, tw), crop, rng)
    out = np.empty((frames.shape[0], th, tw, 3), np.float32)
    for i, frame in enumerate(frames):
        out[i] = _resize_frame(frame, size, resample)[y : y + th, x : x + tw]
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
) -> np.ndarray:
    """Decodes frames ``start, start + frame_stride, ...`` of ``path`` as float32 in ``[-1, 1]``.

    Args:
      path: video file (any container/codec PyAV's FFmpeg decodes); the first video stream is used.
      num_frames: frames to return; ``None`` takes every ``frame_stride``-th frame to the end.
      frame_stride: step between returned frames, in decoded frames (the reference's
        ``sample_rate``).
      start: index of the first returned frame among decodable frames.
      resolution: ``None`` keeps the decoded size; an int gives a square ``(r, r)`` output, a
        pair ``(height, width)``; the short side is resized to cover it (antialiased), then cropped.
      crop: ``"center"`` or ``"random"`` (needs ``rng``; one position for all frames).
      rng: generator for the random crop.
      resample: ``"bilinear"`` (antialiased, as the reference), ``"area"``, ``"bicubic"`` or
        ``"lanczos"``.

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
    if crop == "random" and resolution is not None and rng is None:
        raise ValueError('crop="random" needs an rng (np.random.Generator)')
    _check_resample(resample)
    target = None if resolution is None else _target_hw(resolution)

    frames: list[np.ndarray] = []
    decoded = 0
    size = offsets = None
    with _open_input(path) as container:
        for index, frame in enumerate(_iter_decoded(container, path)):
            decoded = index + 1
            if index < start or (index - start) % frame_stride:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            if target is None:
                rgb = rgb.astype(np.float32)
            else:
                if size is None:
                    # The crop position is drawn once, from the first frame's size, so all frames
                    # share it (a video's frames all have the stream's size).
                    size = resized_size(rgb.shape[0], rgb.shape[1], target)
                    offsets = crop_offsets(size, target, crop, rng)
                y, x = offsets
                rgb = _resize_frame(rgb, size, resample)[y : y + target[0], x : x + target[1]]
            frames.append(rgb)
            if num_frames is not None and len(frames) == num_frames:
                break
    if not frames or (num_frames is not None and len(frames) < num_frames):
        need = start + (1 if num_frames is None else (num_frames - 1) * frame_stride + 1)
        raise ValueError(
            f"{path}: only {decoded} decodable frames, but start={start}, "
            f"num_frames={num_frames}, frame_stride={frame_stride} need {need}"
        )
    return _scale_255(np.stack(frames))


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
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    frames = _pad_even(frames)
    codec = _encoder_name()
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "medium"}
        else:
            stream.bit_rate = int(8 * frames.shape[1] * frames.shape[2] * float(fps))
        for rgb in frames:
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
