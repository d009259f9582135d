"""Times the whole latent diffusion path of examples/latent_video_diffusion, step by step.

videos -> ``wfvae convert`` -> ``wfvae encode-dataset`` -> ``wfvae latent-stats`` -> train ->
sample (ODE) -> decode (Causal Cache), each a fresh process (so every step pays its own imports
and compiles, as a user running the commands does). Prints a markdown table (wall and CPU
seconds per step, with the command) and writes it as JSON; ``--images DIR`` copies the loss
curve and the sample strip (in 64 colours, to keep it small) there.

Usage::

    python benchmarks/diffusion_path.py [--videos /work/shared/videos] [--out /tmp/ldm_path] \\
        [--json benchmarks/results/diffusion_path.json] [--images docs/images]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(name: str, args: list[str], rows: list[dict], out: str) -> None:
    cmd = [sys.executable, "-m", *args]
    # A fresh persistent compilation cache: every step compiles, as on a user's first run.
    cache = os.path.join(out, "xla_cache")
    env = dict(os.environ, PYTHONPATH=REPO, WFVAE_JAX_CACHE_DIR=cache)
    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    if proc.returncode:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    shown = "python -m " + " ".join(args).replace(out, "OUT")
    rows.append({"step": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "command": shown})
    print(f"{name}: {wall:.1f} s", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_videos = "/work/shared/videos"
    if not os.path.isdir(default_videos):
        default_videos = os.path.join(REPO, "tests", "data", "videos")
    p.add_argument("--videos", default=default_videos)
    p.add_argument("--out", default="/tmp/ldm_path")
    p.add_argument("--num_frames", default="17")
    p.add_argument("--resolution", default="64")
    p.add_argument("--clips_per_video", default="8")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks/results/diffusion_path.json"))
    p.add_argument("--images", default=None, help="copy loss.png / samples.png here")
    args = p.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    vae, latents, work = (os.path.join(out, d) for d in ("wfvae_tiny", "latents", "ldm"))
    clips = ["--videos", args.videos, "--num_frames", args.num_frames,
             "--resolution", args.resolution]  # fmt: skip
    rows: list[dict] = []
    run("convert", ["wfvae_jax", "convert", "tests/data/wfvae_tiny", vae], rows, out)
    run("encode-dataset", ["wfvae_jax", "encode-dataset", "--checkpoint", vae, *clips, "--out",
                           latents, "--clips_per_video", args.clips_per_video, "--no_progress"],
        rows, out)  # fmt: skip
    run("latent-stats", ["wfvae_jax", "latent-stats", "--checkpoint", vae, *clips, "--sample",
                         "--write_config", "--no_progress"], rows, out)  # fmt: skip
    run("train", ["examples.latent_video_diffusion.train", "--vae", vae, "--latents", latents,
                  "--workdir", work, "--no_progress"], rows, out)  # fmt: skip
    run(
        "sample + decode",
        ["examples.latent_video_diffusion.sample", "--workdir", work],
        rows,
        out,
    )
    with open(os.path.join(work, "samples", "samples.json")) as f:
        split = json.load(f)
    with open(os.path.join(latents, "manifest.json")) as f:
        num_clips = json.load(f)["num_records"]
    with open(os.path.join(work, "loss.jsonl")) as f:
        losses = [json.loads(line) for line in f]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "videos": args.videos,
        "clips": num_clips,
        "steps": rows,
        "sample_split_s": split["times"],
        "sample": {k: split[k] for k in ("solver", "num_steps", "t_chunk", "shape")},
        "loss_first_last": [losses[0], losses[-1]],
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print("| step | wall (s) | CPU (s) | command |\n| --- | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['step']} | {r['wall_s']} | {r['cpu_s']} | `{r['command']}` |")
    t = split["times"]
    print(f"\nsample + decode: ODE {t['sample']:.1f} s, decode {t['decode']:.1f} s; {num_clips} "
          f"clips; loss {losses[0]['loss']:.3f} (step {losses[0]['step']}) -> "
          f"{losses[-1]['loss']:.3f} (step {losses[-1]['step']})")  # fmt: skip
    if args.images:
        from PIL import Image

        shutil.copy(os.path.join(work, "loss.png"), os.path.join(args.images, "ldm_loss.png"))
        # 64 colours: the strip of a random-weight VAE is noise, which PNG cannot compress.
        strip = Image.open(os.path.join(work, "samples", "samples.png")).quantize(64)
        strip.save(os.path.join(args.images, "ldm_samples.png"), optimize=True)


if __name__ == "__main__":
    main()
