"""Writing videos (PyAV): RGB frames, uint8 or float in ``[-1, 1]``, to an mp4/mkv/mov file."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from wfvae_jax.io.frames import to_uint8


def encoder_name() -> str:
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
    codec = encoder_name()
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
