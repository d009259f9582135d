"""``wfvae encode-dataset``: encode a video dataset into WF-VAE latents (ArrayRecord shards +
manifest); see :mod:`wfvae_jax.encode_dataset` for what is encoded and how a run resumes."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

import jax

from wfvae_jax.data import latents as fmt
from wfvae_jax.data.tfds import TfdsVideoSource
from wfvae_jax.data.video_source import VideoFiles
from wfvae_jax.encode_dataset import (
    COMPUTE_DTYPES,
    DEFAULT_VIDEOS_PER_SHARD,
    DEFAULT_WORKER_COUNT,
    EncodeOptions,
    check_clips,
    encode_dataset,
    parse_resolution,
)
from wfvae_jax.inference.api import T_CHUNK_HELP
from wfvae_jax.inference.sharding import add_mesh_arg
from wfvae_jax.io.clip_spec import DEFAULT_MULTIPLE, ClipSpec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wfvae encode-dataset",
        description="Encode a video dataset into WF-VAE latents (ArrayRecord shards + manifest).",
    )
    p.add_argument("--checkpoint", required=True, help="converted checkpoint (load_pretrained)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of videos (searched recursively)")
    src.add_argument("--tfds", metavar="NAME", help="a prepared TFDS dataset (array_record)")
    p.add_argument("--tfds_split", default="train")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--tfds_video_key", default="video")
    p.add_argument("--out", required=True, help="output directory (resumes if it holds a run)")
    p.add_argument(
        "--num_frames",
        type=int,
        required=True,
        help="frames per clip (1 + 4k; 1 + 8k for 8x models)",
    )
    p.add_argument(
        "--resolution", required=True, help=f"R (square) or HxW, multiples of {DEFAULT_MULTIPLE}"
    )
    p.add_argument("--frame_stride", type=int, default=1)
    p.add_argument("--clips_per_video", type=int, default=1, help="consecutive clips per video")
    p.add_argument("--batch_size", type=int, default=None, help="global (default: 1 per device)")
    p.add_argument("--t_chunk", type=int, default=None, help=T_CHUNK_HELP)
    p.add_argument("--dtype", default="float32", choices=tuple(COMPUTE_DTYPES))
    p.add_argument("--store", default="mean_logvar", choices=fmt.STORES)
    p.add_argument("--storage_dtype", default="float32", choices=tuple(fmt.STORAGE_DTYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of --store sample")
    p.add_argument("--videos_per_shard", type=int, default=DEFAULT_VIDEOS_PER_SHARD)
    p.add_argument(
        "--worker_count",
        type=int,
        default=DEFAULT_WORKER_COUNT,
        help="grain decoding processes per host (each holds ~2 videos' clips)",
    )
    p.add_argument("--resample", default="bilinear", choices=("bilinear", "area", "bicubic"))
    p.add_argument("--overwrite", action="store_true", help="replace another encoding in --out")
    p.add_argument("--multihost", action="store_true", help="one process per host")
    add_mesh_arg(p)
    p.add_argument("--no_progress", dest="progress", action="store_false")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.multihost:
        from wfvae_jax.inference import multihost

        multihost.initialize()
    from wfvae_jax.io.checkpoint import load_pretrained

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = ClipSpec(
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        resolution=parse_resolution(args.resolution),
        resample=args.resample,
        clips_per_video=args.clips_per_video,
    )
    options = EncodeOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(EncodeOptions)}
    )
    options.check()
    params, config = load_pretrained(args.checkpoint, part="encoder")  # the decoder is not used
    check_clips(spec, config)
    if args.videos is not None:
        inputs = VideoFiles(args.videos)
    else:
        inputs = TfdsVideoSource(
            args.tfds, args.tfds_split, args.tfds_data_dir, args.tfds_video_key
        )
    r = encode_dataset(params, config, inputs, args.out, spec, options, checkpoint=args.checkpoint)
    if jax.process_index() == 0:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r["skipped_counts"].items())
        shards = f"{r['num_shards']} shard" + ("s" if r["num_shards"] != 1 else "")
        print(
            f"{r['num_records']} clips in {shards} ({r['records_written']} encoded now, "
            f"{r['clips_per_s']:.2f} clips/s after the first step); skipped {r['skipped']} "
            f"videos{f' ({counts})' if counts else ''}; manifest {r['manifest']}"
        )
    return 0


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
