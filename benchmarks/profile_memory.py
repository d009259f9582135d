"""Where memory and time go: one WF-VAE encode/decode configuration in this (fresh) process.

Prints, for one configuration: the RSS after weights and inputs (baseline), XLA's own plan
(``compiled.memory_analysis()``: temp, argument, output bytes), compile time, first-call and warm
time, and the process's peak RSS (``ru_maxrss``), absolute and above the baseline. Run each
configuration in its own process (peak RSS is a process-wide high-water mark); ``--all`` does
that by re-invoking itself per configuration and prints one table.

  python benchmarks/profile_memory.py --op decode --t-chunk 2
  python benchmarks/profile_memory.py --all --frames 33 --size 256 --json out.json
  LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/profile_memory.py --op encode

Weights are random (``init_params``), so no checkpoint is needed; only the op's half is kept,
as ``load_pretrained(path, part="encoder"|"decoder")`` loads it (the other half is dropped
before the baseline RSS is read; ``ru_maxrss`` still includes ``init_params``' peak). Timings
on a shared machine are noisy: compare A/B within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TAG = "@@PROFILE@@ "


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_hwm() -> None:
    """Restarts the kernel's peak-RSS counter (VmHWM) from the current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024.0


def run_one(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import wfvae_jax
    from wfvae_jax.core import compile_options
    from wfvae_jax.inference import api
    from wfvae_jax.io.checkpoint import OP_PART

    compile_options.TRIM_AFTER_COMPILE = not args.no_trim  # read by the first compile below

    config = wfvae_jax.get_config(args.config)
    params = wfvae_jax.init_params(config, jax.random.key(0))
    part = OP_PART[args.op]
    params = {part: params[part]}  # only the op's half, as load_pretrained(part=...) loads it
    d = config.temporal_downsample
    rng = np.random.default_rng(0)
    if args.op == "encode":
        x = rng.uniform(-1, 1, (1, args.frames, args.size, args.size, 3)).astype(np.float32)
    else:
        t = (args.frames - 1) // d + 1
        x = rng.standard_normal((1, t, args.size // 8, args.size // 8, config.latent_dim))
        x = x.astype(np.float32)
    x = jnp.asarray(x)
    jax.block_until_ready((params, x))
    base = _rss_mib()
    # The library's own lowering: its compile options (wfvae_jax.core.compile_options) included.
    lower = api.lower_encode if args.op == "encode" else api.lower_decode
    _reset_hwm()
    t0 = time.perf_counter()
    compiled = lower(params, x, config, t_chunk=args.t_chunk).compile()
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    compile_hwm = _hwm_mib()
    after_compile = _rss_mib()
    _reset_hwm()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    first_s = time.perf_counter() - t0
    peak_first = _peak_mib()
    exec_hwm = _hwm_mib()
    warm = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, x))
        warm.append(time.perf_counter() - t0)
    return {
        "config": args.config,
        "op": args.op,
        "frames": args.frames,
        "size": args.size,
        "t_chunk": args.t_chunk,
        "preload": os.environ.get("LD_PRELOAD", ""),
        "trim_after_compile": not args.no_trim,
        "baseline_rss_mib": round(base, 1),
        "compile_rss_delta_mib": round(after_compile - base, 1),
        "compile_peak_above_baseline_mib": round(compile_hwm - base, 1),
        "pre_call_rss_mib": round(after_compile, 1),
        "exec_peak_rss_mib": round(max(exec_hwm, _hwm_mib()), 1),
        "exec_peak_above_pre_call_mib": round(max(exec_hwm, _hwm_mib()) - after_compile, 1),
        "xla_temp_mib": round(ma.temp_size_in_bytes / 2**20, 1),
        "xla_args_mib": round(ma.argument_size_in_bytes / 2**20, 1),
        "xla_out_mib": round(ma.output_size_in_bytes / 2**20, 1),
        "compile_s": round(compile_s, 2),
        "first_call_s": round(first_s, 2),
        "warm_s": round(min(warm), 2) if warm else None,
        "peak_rss_first_mib": round(peak_first, 1),
        "peak_rss_mib": round(_peak_mib(), 1),
        "peak_above_baseline_mib": round(_peak_mib() - base, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="WF-VAE-S")
    p.add_argument("--op", choices=("encode", "decode"), default="encode")
    p.add_argument("--frames", type=int, default=33, help="video frames (decode: of the output)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--t-chunk", type=int, default=0, help="0: direct")
    p.add_argument("--repeats", type=int, default=1, help="warm calls after the first")
    p.add_argument("--all", action="store_true", help="encode/decode direct and chunked")
    p.add_argument(
        "--no-trim", action="store_true", help="keep the compile's freed heap (A/B of the trim)"
    )
    p.add_argument("--json", help="append results to this JSON-lines file")
    args = p.parse_args()
    if not args.all:
        r = run_one(args)
        print(TAG + json.dumps(r), flush=True)
        rows = [r]
    else:
        rows = []
        for op, tc in (("encode", 0), ("decode", 0), ("encode", 8), ("decode", 2)):
            cmd = [sys.executable, __file__, "--config", args.config, "--op", op]
            cmd += ["--frames", str(args.frames), "--size", str(args.size), "--t-chunk", str(tc)]
            cmd += ["--repeats", str(args.repeats)] + (["--no-trim"] if args.no_trim else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows += [json.loads(ln[len(TAG) :]) for ln in out.splitlines() if ln.startswith(TAG)]
    keys = ("op", "t_chunk", "frames", "xla_temp_mib", "first_call_s", "warm_s")
    keys += ("pre_call_rss_mib", "exec_peak_above_pre_call_mib", "peak_rss_mib")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
