"""Videos in and out: one import for the video functions of :mod:`wfvae_jax.io`.

Each concern has its own module, which owns it:

- :mod:`wfvae_jax.io.decode`: opening, decoding and probing files.
- :mod:`wfvae_jax.io.windows`: clips out of decoded frames (:func:`cut_windows`,
  :func:`read_video`).
- :mod:`wfvae_jax.io.frames`: frame geometry (resize + crop, :func:`clip_geometry`) and values
  (``[-1, 1]`` <-> uint8), resolution strings.
- :mod:`wfvae_jax.io.clip_spec`: :class:`ClipSpec`, which frames of a video at which size.
- :mod:`wfvae_jax.io.video_write`: :func:`write_video`.
- :mod:`wfvae_jax.io.strips`: PNG preview strips.
"""

from __future__ import annotations

from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.decode import (
    DEFAULT_FPS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    count_frames,
    decoded_frames,
    frame_rate,
    open_video,
    probe_video,
)
from wfvae_jax.io.frames import (
    CLI_CROPS,
    CROPS,
    ClipGeometry,
    clip_geometry,
    crop_offsets,
    format_resolution,
    parse_resolution,
    resize_and_crop,
    resized_size,
    to_float,
    to_uint8,
)
from wfvae_jax.io.strips import abs_error_frames, save_strip_png
from wfvae_jax.io.video_write import encoder_name, write_video
from wfvae_jax.io.windows import ClipTooShortError, Windows, cut_windows, read_video

__all__ = [
    "CLI_CROPS",
    "CROPS",
    "DEFAULT_FPS",
    "VIDEO_EXTENSIONS",
    "ClipGeometry",
    "ClipSpec",
    "ClipTooShortError",
    "VideoInfo",
    "Windows",
    "abs_error_frames",
    "clip_geometry",
    "count_frames",
    "crop_offsets",
    "cut_windows",
    "decoded_frames",
    "encoder_name",
    "format_resolution",
    "frame_rate",
    "open_video",
    "parse_resolution",
    "probe_video",
    "read_video",
    "resize_and_crop",
    "resized_size",
    "save_strip_png",
    "to_float",
    "to_uint8",
    "write_video",
]
