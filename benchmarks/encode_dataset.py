"""Dataset encoding throughput: ``python -m wfvae_jax.encode_dataset`` vs a plain Python loop.

For each device count (default 1 and 2 host devices, ``XLA_FLAGS=
--xla_force_host_platform_device_count``; on a GPU machine ``--gpu`` uses the first N GPUs), a
fresh child process
1. runs the tool (``wfvae_jax.encode_dataset.encode_dataset``: grain workers decoding, a batch
   sharded over every device, results written to ArrayRecord shards) on the clips of
   ``--videos``, and
2. encodes the same clips (the tool's records: video, start) with a plain loop: per batch,
   ``read_video`` each clip, then ``wfvae_jax.encode`` on the default device and ``np.asarray``.
Both use the same global batch size (``--per_device_batch`` x devices) and report clips/s with
the first batch (compilation) excluded, and the share of that time spent waiting for decoded
input (tool: the loop waiting on the grain iterator; plain loop: decoding, during which the
device idles). Weights are random (``--config``) or a converted ``--checkpoint``.

Usage::

    python benchmarks/encode_dataset.py --quick        # tiny model, 3 clips, 9x32x32: a smoke run
    python benchmarks/encode_dataset.py --config WF-VAE-S --videos ../shared/videos \\
        --num_frames 33 --resolution 256 --clips_per_video 4 --worker_count 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _measure as M  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="WF-VAE-S", help="NAMED_CONFIGS name (random weights)")
    p.add_argument("--checkpoint", default=None, help="converted checkpoint instead of --config")
    p.add_argument("--videos", default=os.path.join(REPO, "..", "shared", "videos"))
    p.add_argument("--max_videos", type=int, default=None, help="first N videos only")
    p.add_argument("--num_frames", type=int, default=33)
    p.add_argument("--resolution", default="256")
    p.add_argument("--frame_stride", type=int, default=1)
    p.add_argument("--clips_per_video", type=int, default=4)
    p.add_argument("--per_device_batch", type=int, default=1)
    p.add_argument("--devices", default="1,2", help="comma list of device counts")
    p.add_argument("--gpu", action="store_true", help="device counts are GPUs, not host devices")
    p.add_argument("--worker_count", type=int, default=4)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--t_chunk", type=int, default=None)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per child")
    p.add_argument("--quick", action="store_true", help="tiny model, 3 clips of 9x32x32")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.checkpoint, args.max_videos = "tiny", None, 3
        args.videos = os.path.join(REPO, "tests", "data", "videos")
        args.num_frames, args.resolution, args.clips_per_video = 9, "32", 1
        args.worker_count = min(args.worker_count, 1)
    return args


# ----------------------------------------------------------------------------- the child


def _model(spec: dict) -> tuple[Any, Any]:
    import wfvae_jax

    if spec["checkpoint"]:
        return wfvae_jax.load_pretrained(spec["checkpoint"], part="encoder")
    config = wfvae_jax.get_config(spec["config"])
    return M.random_params(config, part="encoder"), config


def _plain_loop(params, config, root, clips, spec, batch) -> dict[str, float]:
    """The loop a user writes: decode a batch, encode it, fetch it (the last batch padded);
    the first batch (compilation) is excluded."""
    import jax.numpy as jnp
    import numpy as np

    import wfvae_jax
    from wfvae_jax.encode_dataset import parse_resolution
    from wfvae_jax.io.video import read_video

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[spec["dtype"]]
    resolution = parse_resolution(spec["resolution"])
    decode_s = total_s = 0.0
    counted = 0
    for i in range(0, len(clips), batch):
        t0 = time.perf_counter()
        video = np.stack(
            [
                read_video(
                    os.path.join(root, v), spec["num_frames"], spec["frame_stride"], s, resolution
                )
                for v, s in clips[i : i + batch]
            ]
        )
        real = len(video)
        if real < batch:  # pad the last batch: another shape would compile again
            video = np.concatenate([video, np.repeat(video[-1:], batch - real, axis=0)])
        t1 = time.perf_counter()
        post = wfvae_jax.encode(params, video, config, dtype=dtype, t_chunk=spec["t_chunk"])
        np.asarray(post.mean), np.asarray(post.logvar)
        t2 = time.perf_counter()
        if i > 0:  # the first batch compiles
            decode_s += t1 - t0
            total_s += t2 - t0
            counted += real
    return {
        "clips": len(clips),
        "clips_per_s": counted / total_s if total_s else float("nan"),
        "input_wait_share": decode_s / total_s if total_s else float("nan"),
    }


def child_main(spec: dict) -> None:
    import jax

    from wfvae_jax.data import LatentSource
    from wfvae_jax.encode_dataset import ClipSpec, EncodeOptions, FolderInput, encode_dataset

    params, config = _model(spec)
    n_dev = jax.device_count()
    batch = spec["per_device_batch"] * n_dev
    clip_spec = ClipSpec(
        spec["num_frames"], spec["resolution"], spec["frame_stride"], spec["clips_per_video"]
    )
    options = EncodeOptions(
        batch_size=batch,
        dtype=spec["dtype"],
        t_chunk=spec["t_chunk"],
        worker_count=spec["worker_count"],
        progress=False,
    )
    inputs = FolderInput(spec["videos"])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = encode_dataset(params, config, inputs, out, clip_spec, options)
        tool_wall = time.perf_counter() - t0
        source = LatentSource(out)
        clips = [(source[i]["video"], int(source[i]["start"])) for i in range(len(source))]
    steady_s = r["loop_s"] - r["first_step_s"]
    tool = {
        "clips": r["num_records"],
        "clips_per_s": r["clips_per_s"],
        "input_wait_share": r["steady_input_wait_s"] / steady_s if steady_s > 0 else None,
        "first_step_s": r["first_step_s"],
        "wall_s": tool_wall,
        "skipped": r["skipped"],
    }
    t0 = time.perf_counter()
    loop = _plain_loop(params, config, inputs.root, clips, spec, batch)
    loop["wall_s"] = time.perf_counter() - t0
    C.emit_result(
        {"devices": n_dev, "batch": batch, "tool": tool, "loop": loop, **C.backend_info()}
    )


# ----------------------------------------------------------------------------- the parent


def _video_dir(args: argparse.Namespace, tmp: str) -> str:
    """``--videos``, or a folder of links to its first ``--max_videos`` files."""
    if args.max_videos is None:
        return os.path.abspath(args.videos)
    from wfvae_jax.data import find_videos

    root = os.path.abspath(args.videos)
    for rel in find_videos(root)[: args.max_videos]:
        link = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(root, rel), link)
    return tmp


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return
    sys.path.insert(0, REPO)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        videos = _video_dir(args, tmp)
        for n in [int(d) for d in args.devices.split(",")]:
            spec = {
                k: getattr(args, k)
                for k in (
                    "config", "checkpoint", "num_frames", "resolution", "frame_stride",
                    "clips_per_video", "per_device_batch", "worker_count", "dtype", "t_chunk",
                )
            }  # fmt: skip
            spec["videos"] = videos
            env = {"PYTHONPATH": REPO}
            if args.gpu:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
            else:
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
                env["JAX_PLATFORMS"] = "cpu"
            C.log(f"{n} device(s): running the tool and the plain loop ...")
            r = C.run_child(os.path.abspath(__file__), spec, args.timeout, env=env)
            r["requested_devices"] = n
            results.append(r)
            if "error" in r:
                C.log(f"  failed: {r['error']}")
                continue
            speedup = C.ratio(r["tool"]["clips_per_s"], r["loop"]["clips_per_s"])
            for name in ("tool", "loop"):
                m = r[name]
                rows.append(
                    [
                        r["devices"],
                        "encode_dataset" if name == "tool" else "Python loop over encode",
                        r["batch"],
                        m["clips"],
                        m["clips_per_s"],
                        speedup if name == "tool" else 1.0,
                        m["input_wait_share"],
                    ]
                )
    headers = ["devices", "method", "batch", "clips", "clips/s", "vs loop", "input wait"]
    table = C.markdown_table(headers, rows)
    print(table)
    backend = next((r["backend"] for r in results if "backend" in r), "unknown")
    name = f"encode_dataset_{backend}{'_quick' if args.quick else ''}.json"
    out = args.out or os.path.join(REPO, "benchmarks", "results", name)
    C.write_json(out, {"args": vars(args), "results": results, "table": table})
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
