"""Frame geometry and values: the resize and crop that make a model frame, ``[-1, 1]`` <-> uint8.

Resizing follows the reference data pipeline (``causalvideovae/dataset/video_dataset.py``,
PKU-YuanGroup/WF-VAE @ d858bee): scale the short side to the target, antialiased, then crop. The
reference uses torchvision's antialiased bilinear resize; Pillow's ``BILINEAR`` is the same kind of
filter (a triangle kernel widened by the downscale factor), ``"area"`` is exact box averaging.
Resizing runs on float32 values, so outputs are not re-quantised to uint8 levels.

Clip geometry (:func:`clip_geometry`), one rule for every command: ``resolution`` is ``S`` (short
side to S, then a centre crop of S x S), ``(H, W)`` (cover-resize, centre crop H x W) or ``None``
(the decoded size); ``crop="none"`` keeps the aspect ratio instead of cropping (the long side is
rounded to a multiple of ``multiple``). Model-facing values are float32 in ``[-1, 1]``
(``uint8 / 127.5 - 1``, as the reference's ``2 * x - 1`` on ``[0, 1]`` tensors).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from PIL import Image

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
CROPS = ("center", "random", "none")
CLI_CROPS = ("center", "none")  # what the commands offer (random crops are for training)


def target_size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a resolution: an int is square. Raises ValueError unless positive."""
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
    th, tw = target_size(resolution)
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
    th, tw = target_size(resolution)
    h, w = size
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} does not fit in {h}x{w}")
    if crop == "center":
        return int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    if crop == "random":
        if rng is None:
            raise ValueError('crop="random" needs an rng (np.random.Generator)')
        return int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


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
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
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
            out = target_size(resolution)
        return ClipGeometry(src, out, (0, 0), out)
    else:
        out = target_size(resolution)
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


def check_resample(resample: str) -> None:
    """Raises ValueError unless ``resample`` names a filter (``bilinear``, ``bicubic``, ...)."""
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
    check_resample(resample)
    g = clip_geometry(frames.shape[1], frames.shape[2], resolution, crop, rng, multiple)
    if g.output == g.source:
        return to_float(frames)
    out = np.empty((frames.shape[0], *g.output, 3), np.float32)
    for i, frame in enumerate(frames):
        out[i] = apply_geometry(frame, g, resample)
    return scale_255(out)


def apply_geometry(frame: np.ndarray, geometry: ClipGeometry, resample: str) -> np.ndarray:
    """One uint8 ``(H, W, 3)`` frame resized and cropped as ``geometry`` says: float32
    ``(h, w, 3)`` in [0, 255] (:func:`scale_255` maps it to [-1, 1])."""
    if geometry.output == geometry.source:
        return frame.astype(np.float32)
    (y, x), (th, tw) = geometry.offset, geometry.output
    return _resize_frame(frame, geometry.resized, resample)[y : y + th, x : x + tw]


def scale_255(x: np.ndarray) -> np.ndarray:
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


def nearest_multiples(v: int, m: int) -> list[int]:
    """The positive multiples of ``m`` nearest ``v`` (one if ``v`` is one or below ``m``)."""
    lo = v // m * m
    return [lo] if lo == v and v >= m else [m] if lo < m else [lo, lo + m]
