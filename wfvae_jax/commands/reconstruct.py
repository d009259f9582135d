"""``wfvae reconstruct``: reconstruct a real video with a converted WF-VAE, write it, measure it.

Usage::

    wfvae reconstruct --checkpoint DIR --input VIDEO --output OUT.mp4 \
        [--num_frames 33] [--resolution 256 | HxW | native] [--crop center|none] \
        [--frame_stride 1] [--start 0] [--t_chunk auto|0|16] [--dtype float32|bfloat16]
    python -m wfvae_jax reconstruct ...        # the same, without the console script

Reads ``num_frames`` (``1 + 4k``; ``1 + 8k`` for 8x models) frames at ``frame_stride``, resized and
cropped as ``wfvae_jax.io.video.ClipSpec`` says (the log states what the crop keeps), reconstructs
them with ``wfvae_jax.reconstruct`` (posterior mode; an LC-VAE checkpoint's compression is applied)
and writes OUT.mp4 at the source frame rate divided by ``frame_stride``, OUT.png (rows: input |
reconstruction | 4x absolute error) and OUT.json (metrics, geometry and timings); prints PSNR/SSIM
and the wall time of the first call (compilation included) and a second, steady-state call.
PSNR/SSIM run in chunks of frames, so the peak memory is the model's. ``--t_chunk`` is the Causal
Cache chunk in video frames; by default long clips are chunked (``inference.api.auto_t_chunk``),
``--t_chunk 0`` runs the whole clip at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from wfvae_jax.commands import clip_args
from wfvae_jax.errors import UserError
from wfvae_jax.inference import sharding
from wfvae_jax.io import video as video_io
from wfvae_jax.io.clip_spec import ClipSpec


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def check_t_chunk(t_chunk: int | None, config: Any) -> None:
    """Raises UserError unless ``--t_chunk`` is None (auto), 0 (direct) or an encoder chunk the
    model runs (``WFVAEConfig.check_t_chunk``); the hint names the nearest valid value."""
    if t_chunk is None:
        return
    try:
        config.check_t_chunk(t_chunk, "encode")
    except ValueError as e:
        near = 0 if config.norm_type == "groupnorm" else config.nearest_t_chunk(t_chunk)
        raise UserError(f"--{e}", hint=f"pass --t_chunk {near}") from None


_DEFAULT_SPEC = ClipSpec()


def reconstruct_file(
    checkpoint: str,
    input_path: str,
    output: str,
    spec: ClipSpec = _DEFAULT_SPEC,
    t_chunk: int | None = None,
    dtype: str = "float32",
    log: Any = None,
    mesh: str | None = None,
) -> dict:
    """Runs the whole reconstruction; returns the metrics/timings dict it also writes as JSON.

    Args:
      checkpoint: converted/exported checkpoint directory (``wfvae_jax.load_pretrained``).
      input_path: a video file; output: the .mp4 to write (``.png``/``.json`` beside it).
      spec: frames and geometry (:class:`wfvae_jax.io.video.ClipSpec`).
      t_chunk: Causal Cache chunk in video frames, or ``None``.
      dtype: compute dtype name.
      log: ``print``-like callable for progress lines (default: stderr).
      mesh: ``"data=D,space=S"`` (``wfvae_jax.inference.sharding``): split the video's height over S
        devices; ``None``: one device.
    Raises:
      FileNotFoundError: no such input or checkpoint.
      ValueError / UserError: not a video, too few frames, a frame count or ``t_chunk`` the
        model cannot take (the message names the nearest valid value).
    """
    import wfvae_jax
    from wfvae_jax.io.checkpoint import load_lc_settings
    from wfvae_jax.metrics import psnr, ssim

    log = log or (lambda *a: print(*a, file=sys.stderr))
    info = video_io.probe_video(input_path)  # a missing file or non-video fails before loading
    wfvae_jax.parse_dtype(dtype)
    device_mesh = sharding.mesh_from_arg(mesh)  # a bad --mesh fails before loading
    params, config = wfvae_jax.load_pretrained(checkpoint)
    lc = load_lc_settings(checkpoint)
    spec.check_model(config)
    check_t_chunk(t_chunk, config)
    geometry = spec.geometry(info.height, info.width)
    fps = spec.fps(info)
    log(f"input {input_path}: {geometry.describe()}, {fps:g} fps after stride")
    if lc is not None:
        log(f"LC-VAE checkpoint: compressing latents ({lc.mask}, keep {lc.keep_ratio:g})")
    video = spec.read(input_path, config=config)  # (T, H, W, 3) float32 in [-1, 1]
    x = video[None]

    def rec(v):
        return wfvae_jax.reconstruct(
            params,
            v,
            config,
            t_chunk=t_chunk,
            dtype=dtype,
            lc=lc,
            return_latent=True,
            mesh=device_mesh,
        )

    (y, z), first = _timed(rec, x)
    _, steady = _timed(rec, x)
    # Metrics run frame-chunked (wfvae_jax.metrics): no whole-clip temporaries.
    frame_psnr = np.asarray(psnr(x, y))[0]
    frame_ssim = np.asarray(ssim(x, y))[0]

    stem = os.path.splitext(output)[0]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    recon = np.asarray(y[0])
    video_io.write_video(output, recon, fps=fps)
    # The strip shows 8 frames: the error is computed for those only.
    idx = np.unique(np.rint(np.linspace(0, len(video) - 1, 8)).astype(int))
    video_io.save_strip_png(
        stem + ".png",
        [video[idx], recon[idx], video_io.abs_error_frames(video[idx], recon[idx], gain=4.0)],
        labels=["input", "recon", "|err| x4"],
        num_samples=len(idx),
    )
    result = {
        "checkpoint": os.path.abspath(checkpoint),
        "input": os.path.abspath(input_path),
        "clip": spec.to_dict(),
        "geometry": geometry.describe(),
        "source_size_hw": [info.height, info.width],
        "fps": fps,
        "shape": list(x.shape),
        "latent_shape": list(z.shape),
        "dtype": dtype,
        # The encoder chunk used (0: direct); the default is the auto rule's.
        "t_chunk": wfvae_jax.auto_t_chunk(config, *x.shape[1:4]) if t_chunk is None else t_chunk,
        "mesh": mesh,
        "lc": None if lc is None else lc.to_dict(),
        "psnr": float(np.mean(frame_psnr)),
        "ssim": float(np.mean(frame_ssim)),
        "psnr_per_frame": [float(v) for v in frame_psnr],
        "reconstruct_s": {"first": first, "steady": steady},
        "backend": jax.default_backend(),
        "outputs": {"video": output, "strip": stem + ".png"},
    }
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    return result


def build_parser() -> argparse.ArgumentParser:
    from wfvae_jax.inference.api import DTYPES, T_CHUNK_HELP

    ap = argparse.ArgumentParser(
        prog="wfvae reconstruct", description="Encode and decode a real video with WF-VAE."
    )
    ap.add_argument("--checkpoint", required=True, help="converted checkpoint directory")
    ap.add_argument("--input", required=True, help="video file (anything FFmpeg decodes)")
    ap.add_argument("--output", required=True, help="output .mp4 (also writes .png and .json)")
    clip_args.add_clip_args(ap, num_frames=33, resolution="256")
    ap.add_argument("--t_chunk", type=int, default=None, help=T_CHUNK_HELP)
    ap.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    sharding.add_mesh_arg(ap)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``wfvae reconstruct``; raises user errors (``wfvae_jax.commands.errors.run`` prints them)."""
    a = build_parser().parse_args(argv)
    spec = clip_args.clip_spec_from_args(a)
    r = reconstruct_file(a.checkpoint, a.input, a.output, spec, a.t_chunk, a.dtype, mesh=a.mesh)
    print(f"input {r['shape']} -> latent {r['latent_shape']} ({r['backend']}, {r['dtype']})")
    print(f"PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}")
    t = r["reconstruct_s"]
    print(f"reconstruct: first call {t['first']:.2f} s, steady {t['steady']:.2f} s")
    print(f"wrote {r['outputs']['video']} ({r['fps']:g} fps), {r['outputs']['strip']}")
    return 0


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
