"""What a clip is: which frames of a video (count, stride, start), how many clips a video gives and
where (the sampling policy), at which size (:class:`ClipSpec`).

The one description of clips every command and the data pipeline use. Reading the first clip of
a file is :meth:`ClipSpec.read` (:func:`wfvae_jax.io.windows.read_video`); the clips of every video
of a folder or a TFDS dataset are ``wfvae_jax.data.VideoSource``'s; the flags that build a spec
are ``wfvae_jax.commands.clip_args``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.errors import UserError
from wfvae_jax.io.decode import VideoInfo
from wfvae_jax.io.frames import (
    CLI_CROPS,
    CROPS,
    ClipGeometry,
    check_resample,
    clip_geometry,
    format_resolution,
    nearest_multiples,
    target_size,
)
from wfvae_jax.io.windows import ClipTooShortError, read_video

# Clip sizes are multiples of the model's spatial downsampling (every WF-VAE: 8).
DEFAULT_MULTIPLE = WFVAEConfig().spatial_downsample
# Where a video's clips are (``ClipSpec.sampling``): back to back from ``start``; spread evenly
# over the video; one window drawn at random (training).
SAMPLINGS = ("consecutive", "evenly_spaced", "random")


def window_span(num_frames: int, frame_stride: int) -> int:
    """Decoded frames a window of ``num_frames`` frames ``frame_stride`` apart covers,
    ``(num_frames - 1) * frame_stride + 1``. Raises ValueError for values below 1."""
    if num_frames < 1 or frame_stride < 1:
        raise ValueError(
            f"num_frames and frame_stride must be >= 1, got {num_frames}, {frame_stride}"
        )
    return (num_frames - 1) * frame_stride + 1


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Which clips of a video, at which size: the shared video options of every command.

    Attributes:
      num_frames: frames per clip (``None``: to the end of the video). The model's frame-count
        rule is checked by :meth:`check_model` (``1 + 4k``, or ``1 + 8k`` for 8x-temporal models).
      frame_stride: step between frames, in decoded frames (output fps = source fps / stride).
      start: first decoded frame of the first clip (``consecutive``), or of the part of the video
        the other samplings draw from.
      resolution: ``S``, ``(H, W)`` or ``None`` (decoded size); see :func:`clip_geometry`.
      crop: ``"center"`` or ``"none"`` (keep the aspect ratio); ``"random"`` for training.
      resample: :func:`read_video`'s filter.
      multiple: every output size is a multiple of this (the model's ``spatial_downsample``).
      clips_per_video: at most this many clips per video (:meth:`window_starts`).
      sampling: where they are, one of :data:`SAMPLINGS` (:meth:`window_starts`).
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
    multiple: int = DEFAULT_MULTIPLE
    clips_per_video: int = 1
    sampling: str = "consecutive"

    def __post_init__(self) -> None:
        res = self.resolution
        if res is not None and not isinstance(res, (int, np.integer)):
            object.__setattr__(self, "resolution", target_size(res))
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CLI_CROPS}, got {self.crop!r}")
        check_resample(self.resample)
        if self.clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {self.clips_per_video}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.num_frames is None and (self.clips_per_video > 1 or self.sampling != "consecutive"):
            raise ValueError("num_frames=None (to the end) takes one consecutive clip per video")
        sizes = [] if res is None else [res] if isinstance(res, (int, np.integer)) else list(res)
        for v in sizes:
            if v < 1 or v % self.multiple:
                near = " or ".join(map(str, nearest_multiples(v, self.multiple)))
                raise ValueError(
                    f"resolution {format_resolution(res)}: sizes must be positive multiples of "
                    f"{self.multiple}, got {v}; nearest valid: {near}"
                )

    @property
    def span(self) -> int | None:
        """Decoded frames a clip covers (:func:`window_span`); None for ``num_frames=None``."""
        return None if self.num_frames is None else window_span(self.num_frames, self.frame_stride)

    @property
    def size(self) -> tuple[int, int] | None:
        """``(H, W)`` of every clip when it does not depend on the video (a resolution, cropped
        or ``(H, W)`` exactly); None when it does (``native``, or ``S`` with ``crop="none"``)."""
        res = self.resolution
        if res is None or (self.crop == "none" and isinstance(res, (int, np.integer))):
            return None
        return target_size(res)

    def window_starts(
        self, total: int | None = None, rng: np.random.Generator | None = None
    ) -> list[int]:
        """The decoded index of each clip's first frame in a video of ``total`` decodable frames.

        - ``consecutive``: ``start + k * num_frames * frame_stride`` for ``k < clips_per_video``
          (clip ``k + 1`` starts where clip ``k`` would take its next frame), those that fit;
          with ``total=None`` all of them (a reader keeps the ones the video completes).
        - ``evenly_spaced``: ``clips_per_video`` windows from ``start`` to the last one that fits,
          ``round(linspace(start, total - span, clips_per_video))`` (they may overlap).
        - ``random``: one window, its start drawn uniformly from ``start .. total - span`` with
          ``rng.integers`` (the training pipeline's draw).

        Returns ``[]`` when not one clip fits. Raises ValueError when ``total`` (or ``rng`` for
        ``random``) is needed and missing.
        """
        if self.num_frames is None:
            return [self.start] if total is None or total > self.start else []
        span, k = self.span, self.clips_per_video
        if self.sampling == "consecutive":
            starts = [self.start + i * self.num_frames * self.frame_stride for i in range(k)]
            return starts if total is None else [s for s in starts if s + span <= total]
        if total is None:
            raise ValueError(f"sampling={self.sampling!r} needs the video's frame count")
        last = total - span
        if last < self.start:
            return []
        if self.sampling == "evenly_spaced":
            return [int(s) for s in np.linspace(self.start, last, k).round().astype(int)]
        if rng is None:
            raise ValueError('sampling="random" needs an rng (np.random.Generator)')
        return [int(rng.integers(self.start, last + 1))]

    def geometry(self, height: int, width: int) -> ClipGeometry:
        """The resize/crop for a ``height x width`` source (:func:`clip_geometry`)."""
        crop = "center" if self.crop == "random" else self.crop
        return clip_geometry(height, width, self.resolution, crop, None, self.multiple)

    def check_model(self, config: Any, flag: str = "--num_frames") -> None:
        """Checks the clips against the model: ``num_frames`` against its frame-count rule
        (``config.check_num_frames``), sizes against its ``spatial_downsample``.

        Raises:
          wfvae_jax.errors.UserError: the message names the nearest valid count, the hint
            the flag to pass (a command-line error: exit 2).
        """
        d = config.spatial_downsample
        if self.multiple % d:
            raise UserError(
                f"clip sizes are multiples of {self.multiple}, the model needs multiples of {d}",
                hint=f"pass a --resolution in multiples of {d}",
            )
        if self.num_frames is None:
            return
        try:
            config.check_num_frames(self.num_frames, flag)
        except ValueError as e:
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
