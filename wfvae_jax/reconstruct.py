"""Reconstruct a real video with a converted WF-VAE: encode, decode, write, measure.

Usage::

    python -m wfvae_jax.reconstruct --checkpoint DIR --input VIDEO --output OUT.mp4 \
        [--num_frames 33] [--resolution 256] [--frame_stride 1] [--start 0] \
        [--t_chunk 16] [--dtype float32|bfloat16]

Reads ``num_frames`` (``1 + 4k``) frames at ``frame_stride``, short-side resized and center
cropped to ``resolution`` (a multiple of 8), encodes to the posterior mode and decodes. Writes
OUT.mp4, OUT.png (rows: input | reconstruction | 4x absolute error) and OUT.json (metrics and
timings); prints PSNR/SSIM and encode/decode wall time of the first call (compilation included)
and a second, steady-state call.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import wfvae_jax
from wfvae_jax import video_io
from wfvae_jax.api import nearest_valid_num_frames
from wfvae_jax.metrics import psnr, ssim


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def reconstruct(
    checkpoint: str,
    input_path: str,
    output: str,
    num_frames: int = 33,
    resolution: int | None = 256,
    frame_stride: int = 1,
    start: int = 0,
    t_chunk: int | None = None,
    dtype: str = "float32",
) -> dict:
    """Runs the whole reconstruction; returns the metrics/timings dict it also writes as JSON.

    Raises:
      ValueError: ``num_frames`` not ``1 + 4k`` (names the nearest valid count), a video with
        too few frames, a resolution not a multiple of 8 (from ``wfvae_jax.encode``).
    """
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(
            f"--num_frames must be 1 + 4k, got {num_frames}; nearest valid is "
            f"{nearest_valid_num_frames(num_frames)}"
        )
    params, config = wfvae_jax.load_pretrained(checkpoint)
    cdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    video = video_io.read_video(input_path, num_frames, frame_stride, start, resolution)
    x = jnp.asarray(video[None])

    def enc(v):
        return wfvae_jax.encode(params, v, config, dtype=cdtype, t_chunk=t_chunk).mode()

    dec_chunk = None if t_chunk is None else max(t_chunk // 4, 1)

    def dec(z):
        return wfvae_jax.decode(params, z, config, dtype=cdtype, t_chunk=dec_chunk)

    z, enc_first = _timed(enc, x)
    _, enc_steady = _timed(enc, x)
    y, dec_first = _timed(dec, z)
    _, dec_steady = _timed(dec, z)
    y = jnp.clip(y.astype(jnp.float32), -1, 1)
    frame_psnr = np.asarray(psnr(x, y))[0]
    frame_ssim = np.asarray(ssim(x, y))[0]

    stem = os.path.splitext(output)[0]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    recon = np.asarray(y[0])
    video_io.write_video(output, recon, fps=25.0 / frame_stride)
    video_io.save_strip_png(
        stem + ".png",
        [video, recon, video_io.abs_error_frames(video, recon, gain=4.0)],
        labels=["input", "recon", "|err| x4"],
    )
    result = {
        "checkpoint": os.path.abspath(checkpoint),
        "input": os.path.abspath(input_path),
        "shape": list(x.shape),
        "latent_shape": list(z.shape),
        "dtype": dtype,
        "t_chunk": t_chunk,
        "psnr": float(np.mean(frame_psnr)),
        "ssim": float(np.mean(frame_ssim)),
        "psnr_per_frame": [float(v) for v in frame_psnr],
        "encode_s": {"first": enc_first, "steady": enc_steady},
        "decode_s": {"first": dec_first, "steady": dec_steady},
        "backend": jax.default_backend(),
        "outputs": {"video": output, "strip": stem + ".png"},
    }
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Encode and decode a real video with WF-VAE.")
    ap.add_argument("--checkpoint", required=True, help="converted checkpoint directory")
    ap.add_argument("--input", required=True, help="video file (anything FFmpeg decodes)")
    ap.add_argument("--output", required=True, help="output .mp4 (also writes .png and .json)")
    ap.add_argument("--num_frames", type=int, default=33, help="1 + 4k frames")
    ap.add_argument("--resolution", type=int, default=256, help="square crop size, multiple of 8")
    ap.add_argument("--frame_stride", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first frame index")
    ap.add_argument("--t_chunk", type=int, default=None, help="Causal Cache chunk (frames)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args(argv)
    r = reconstruct(
        a.checkpoint,
        a.input,
        a.output,
        a.num_frames,
        a.resolution,
        a.frame_stride,
        a.start,
        a.t_chunk,
        a.dtype,
    )
    print(f"input {r['shape']} -> latent {r['latent_shape']} ({r['backend']}, {r['dtype']})")
    print(f"PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}")
    for k in ("encode_s", "decode_s"):
        print(f"{k[:6]}: first call {r[k]['first']:.2f} s, steady {r[k]['steady']:.2f} s")
    print(f"wrote {r['outputs']['video']}, {r['outputs']['strip']}")


if __name__ == "__main__":
    main()
