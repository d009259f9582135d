"""Preview images: PNG strips of videos (input | reconstruction | error) and error frames."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from wfvae_jax.io.frames import to_uint8


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
