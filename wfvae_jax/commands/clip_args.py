"""Command-line flags of a clip (``--num_frames --frame_stride --start --resolution --crop``),
shared by every command that reads videos, the :class:`~wfvae_jax.io.clip_spec.ClipSpec` they
describe, and the folder ``--videos`` names."""

from __future__ import annotations

import argparse
import os
from typing import Any

from wfvae_jax.data.video_source import VideoFiles
from wfvae_jax.errors import UserError
from wfvae_jax.io.clip_spec import DEFAULT_MULTIPLE, ClipSpec
from wfvae_jax.io.frames import CLI_CROPS, format_resolution, nearest_multiples, parse_resolution


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
        f"H x W; native: the decoded size. Sizes are multiples of {DEFAULT_MULTIPLE}",
    )
    parser.add_argument(
        "--crop",
        choices=CLI_CROPS,
        default="center",
        help="center: cut to the size (the log says how much is lost); none: keep the whole "
        f"frame and its aspect ratio (the long side rounds to a multiple of {DEFAULT_MULTIPLE})",
    )


def clip_spec_from_args(args: argparse.Namespace, **overrides: Any) -> ClipSpec:
    """The :class:`ClipSpec` of the flags :func:`add_clip_args` added.

    Raises:
      wfvae_jax.errors.UserError: a bad flag value, with a hint naming a valid one.
    """
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
            fixed = [nearest_multiples(v, m)[0] for v in sizes]
            fixed = fixed[0] if len(fixed) == 1 else tuple(fixed)
            hint = f"pass --resolution {format_resolution(fixed)}"
        elif msg.startswith(("num_frames", "frame_stride", "start")):
            msg = "--" + msg
        raise UserError(msg, hint=hint) from e


def video_folder(path: str | os.PathLike) -> VideoFiles:
    """The video files under ``--videos PATH`` (``wfvae_jax.data.VideoFiles``).

    Raises:
      wfvae_jax.errors.UserError: ``path`` is not a directory, or holds no video file.
    """
    if not os.path.isdir(path):
        raise UserError(f"--videos {path} is not a directory", hint="pass a folder of videos")
    try:
        return VideoFiles(path)
    except ValueError as e:
        raise UserError(str(e), hint="mp4, avi, mkv, mov or webm files, in subfolders too") from e
