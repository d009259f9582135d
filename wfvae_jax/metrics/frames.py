"""What the per-frame metrics (PSNR, SSIM, LPIPS) share: input checks and frame chunking.

Each metric is computed over chunks of frames (:func:`map_frame_chunks`), so its memory is bounded
by the chunk, not the clip; per-frame values do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np


def check_video_pair(x: Any, y: Any, name: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Validate two video batches and return them as float32 JAX arrays.

    Args:
      x, y: videos, (B, T, H, W, C), float, values nominally in [-1, 1].
      name: metric name used in error messages.

    Returns:
      (x, y) as float32 arrays of the same shape.

    Raises:
      ValueError: if the shapes differ, are not 5-D, or the dtype is not floating point
        (integer frames must be scaled to [-1, 1] by the caller, e.g. ``u8 / 127.5 - 1``).
    """
    check_video_shapes(x, y, name)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


# Pixels (B x frames x H x W) one metric call sees when the caller gives no frame_chunk: 4
# frames at 256x256, 1 at 512x512 and above. SSIM's XLA program holds ~40 float32 values per
# RGB pixel (measured: ~170 MB for 16 frames at 256x256), so this bounds a call to ~45 MB at
# 256x256 whatever the clip length; per-frame metrics do not depend on the chunking.
PIXELS_PER_CALL = 2**18


def frames_per_call(shape: tuple[int, ...], frame_chunk: int | None) -> int:
    """Frames of a ``(B, T, H, W, C)`` batch per metric call: ``frame_chunk``, or if ``None`` as
    many as fit in :data:`PIXELS_PER_CALL` (at least 1). Raises ValueError for ``frame_chunk < 1``.
    """
    if frame_chunk is not None:
        if frame_chunk < 1:
            raise ValueError(f"frame_chunk must be >= 1 or None, got {frame_chunk}")
        return int(frame_chunk)
    b, _, h, w = shape[:4]
    return max(1, PIXELS_PER_CALL // max(1, b * h * w))


def map_frame_chunks(
    fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
    x: Any,
    y: Any,
    frame_chunk: int | None,
) -> jnp.ndarray:
    """``fn(x, y)`` for a per-frame metric ``fn: (B, t, H, W, C) x 2 -> (B, t)``, computed over
    chunks of at most :func:`frames_per_call` frames and concatenated along time.

    Each frame's value depends only on that frame, so the result equals one call on the whole
    clip; only the chunk is converted to float32 on the device at a time, so memory is bounded
    by the chunk, not the clip. ``x``, ``y``: already checked by :func:`check_video_pair`'s
    rules (use :func:`check_video_shapes`).
    """
    t = np.shape(x)[1]
    step = frames_per_call(np.shape(x), frame_chunk)
    if step >= t:
        return fn(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    parts = []
    for i in range(0, t, step):
        xs = jnp.asarray(x[:, i : i + step], jnp.float32)
        ys = jnp.asarray(y[:, i : i + step], jnp.float32)
        parts.append(fn(xs, ys))
    return jnp.concatenate(parts, axis=1)


def check_video_shapes(x: Any, y: Any, name: str) -> None:
    """:func:`check_video_pair`'s checks without converting (or copying) the arrays."""
    x_shape, y_shape = np.shape(x), np.shape(y)
    if len(x_shape) != 5:
        raise ValueError(f"{name}: expected videos (B, T, H, W, C), got shape {x_shape}")
    if x_shape != y_shape:
        raise ValueError(f"{name}: shapes differ: {x_shape} vs {y_shape}")
    for v in (x, y):
        if not jnp.issubdtype(jnp.result_type(v), jnp.floating):
            raise ValueError(
                f"{name}: expected float videos in [-1, 1], got dtype {jnp.result_type(v)}; "
                "scale uint8 frames with u8 / 127.5 - 1"
            )


def to_unit_range(x: jnp.ndarray) -> jnp.ndarray:
    """Map [-1, 1] to [0, 1], clamping first as the reference does before writing videos.

    Source: causalvideovae/utils/video_utils.py ``custom_to_video`` (clamp(-1, 1), then
    (x + 1) / 2); the reference eval reads those clipped frames back from disk.
    """
    return (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0
