"""What a clip is: which frames of a video (count, stride, start) at which size (:class:`ClipSpec`).

The one description of a clip every command and the data pipeline use; reading one clip from a
file is :meth:`ClipSpec.read` (:func:`wfvae_jax.io.decode.read_video`), the flags that build it
are ``wfvae_jax.commands.clip_args``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from wfvae_jax.errors import UserError
from wfvae_jax.io.decode import ClipTooShortError, VideoInfo, read_video
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
