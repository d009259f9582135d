"""Encode / decode throughput and peak memory (the paper's Fig. 4 setting) on the present backend.

For each model (default WF-VAE-S and WF-VAE-L, random weights), spatial size (default 256 and
512; 768 is added on an accelerator with at least ``--room-768-gib`` GiB, or with ``--with-768``),
dtype (float32, bfloat16) and mode (direct; chunked: Causal Cache with ``--enc-chunk`` /
``--dec-chunk``, by default the chunk ``wfvae_jax.auto_t_chunk`` picks for the shape), measures
``wfvae_jax.encode`` and ``wfvae_jax.decode`` on a ``1 x T x S x S`` clip (T = 33), each op in
fresh child processes (see ``benchmarks/_measure.py``): first call (compile + first run), median
warm time (warm-up excluded), videos/s, and peak memory: device ``peak_bytes_in_use``
(``memory_stats()``) on GPU/TPU, peak RSS on CPU (which has no device statistics), also minus the
baseline after imports, weights and inputs. ``--precision`` sets ``jax_default_matmul_precision``
in the children (``highest``: no TF32 on GPUs). Configurations run in priority order (modes,
then dtypes, then models, then sizes, as listed); ``--budget`` stops starting new ones after that
many seconds and lists the rest as not measured. ``benchmarks/gpu_check.sh`` runs the GPU table.

Usage::

    python benchmarks/throughput.py --quick                      # WF-VAE-S, 33x128x128, fp32
    nice -n 10 python benchmarks/throughput.py --models WF-VAE-S --sizes 256 --dtypes float32
    python benchmarks/throughput.py --out benchmarks/results/throughput_gpu.json   # on a GPU
    python benchmarks/throughput.py --models tiny --sizes 32 --frames 9 --enc-chunk 4 \
        --dec-chunk 1 --warm-runs 1                              # a CPU dry run in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _measure as M  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="WF-VAE-S,WF-VAE-L")
    p.add_argument("--sizes", default="256,512", help="comma list of H = W")
    p.add_argument("--frames", type=int, default=33, help="T = 1 + d k (d: the models')")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--ops", default="encode,decode")
    p.add_argument("--modes", default="direct,chunked", help="direct and/or chunked")
    p.add_argument(
        "--enc-chunk",
        default="auto",
        help="chunked encoder t_chunk in video frames, or auto (wfvae_jax.auto_t_chunk)",
    )
    p.add_argument(
        "--dec-chunk",
        default="auto",
        help="chunked decoder t_chunk in latent frames, or auto (wfvae_jax.auto_t_chunk)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["default", "high", "highest"],
        help="jax_default_matmul_precision in the children (default: jax's)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds: start no configuration after this much wall time (the rest are listed)",
    )
    p.add_argument("--with-768", action="store_true", help="add 768x768 whatever the device")
    p.add_argument("--no-768", action="store_true", help="never add 768x768")
    p.add_argument(
        "--room-768-gib",
        type=float,
        default=40.0,
        help="add 768x768 automatically on an accelerator with at least this much memory",
    )
    p.add_argument("--warm-runs", type=int, default=3)
    p.add_argument("--warm-budget", type=float, default=300.0)
    p.add_argument(
        "--skip-over",
        type=float,
        default=1800.0,
        help="skip a config whose predicted child time (scaled by pixel count from a smaller "
        "size of the same model, op and dtype) exceeds this many seconds",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="per child process, seconds")
    p.add_argument("--quick", action="store_true", help="WF-VAE-S, 128x128, float32, 2 warm runs")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument(
        "--package-dir",
        default=None,
        help="measure this wfvae_jax package directory (e.g. a patched copy) instead of the "
        "installed one",
    )
    p.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        help="only print the table of saved run(s); several files are concatenated",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.sizes, args.dtypes, args.warm_runs = "WF-VAE-S", "128", "float32", 2
        args.modes, args.no_768 = "direct", True
    args.models = args.models.split(",")
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.dtypes = args.dtypes.split(",")
    args.ops = args.ops.split(",")
    args.modes = args.modes.split(",")
    if set(args.modes) - {"direct", "chunked"}:
        p.error(f"--modes must be direct and/or chunked, got {args.modes}")
    if args.from_json:
        return args
    M.check_frames(p, args.models, [args.frames])
    for flag in ("enc_chunk", "dec_chunk"):
        v = getattr(args, flag)
        if v != "auto":
            try:
                setattr(args, flag, int(v))
            except ValueError:
                p.error(f"--{flag.replace('_', '-')} must be an integer or auto, got {v!r}")
    if args.enc_chunk != "auto":
        M.check_enc_chunk(p, args.models, args.enc_chunk)
    if args.dec_chunk != "auto" and args.dec_chunk < 1:
        p.error("--dec-chunk must be >= 1")
    return args


def chunk_for(args: argparse.Namespace, model: str, op: str, size: int) -> int:
    """The chunked mode's t_chunk (video frames for encode, latent frames for decode); 0 where
    the auto rule runs the clip direct."""
    import wfvae_jax

    given = args.enc_chunk if op == "encode" else args.dec_chunk
    if given != "auto":
        return given
    cfg = wfvae_jax.get_config(model)
    c = wfvae_jax.auto_t_chunk(cfg, args.frames, size, size)
    return c if op == "encode" or not c else cfg.latent_chunk(c)


def _accelerator_gib() -> float | None:
    """Memory limit of the first accelerator in GiB (None on CPU), probed in a child process."""
    import json
    import subprocess

    code = (
        "import json, jax; d = jax.devices()[0]; s = d.memory_stats() or {}; "
        "print(json.dumps([jax.default_backend(), s.get('bytes_limit')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    try:
        backend, limit = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return None if backend == "cpu" or not limit else limit / 2**30


def run_sweep(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    sizes = list(args.sizes)
    note = ""
    if 768 not in sizes and not args.no_768:
        gib = _accelerator_gib()
        if args.with_768 or (gib is not None and gib >= args.room_768_gib):
            sizes.append(768)
            note = f"768x768 included ({'forced' if args.with_768 else f'{gib:.0f} GiB device'})."
        else:
            note = "768x768 not run (" + (
                "CPU backend)." if gib is None else f"{gib:.0f} GiB < {args.room_768_gib} GiB)."
            )
    cache_dir = tempfile.mkdtemp(prefix="wfvae_bench_cache_")
    env, args.code = C.snapshot_package(tempfile.mkdtemp(dir=cache_dir), args.package_dir)
    results: list[dict[str, Any]] = []
    done: dict[tuple[str, str, str, str], tuple[int, float]] = {}
    start = time.time()
    order = [
        (dtype, mode, model, size, op)
        for mode in args.modes
        for dtype in args.dtypes
        for model in args.models
        for size in sorted(sizes)
        for op in args.ops
    ]
    try:
        for dtype, mode, model, size, op in order:
            tc = None if mode == "direct" else chunk_for(args, model, op, size)
            spec = {
                "op": op,
                "mode": mode,
                "model": model,
                "size": size,
                "frames": args.frames,
                "t_chunk": tc,
                "dtype": dtype,
                "batch": 1,
                "warm_runs": args.warm_runs,
                "warm_budget_s": args.warm_budget,
                "cache_dir": cache_dir,
                "seed": 0,
                "precision": args.precision,
            }
            what = f"{model} {op} {mode} 1x{args.frames}x{size}x{size} {dtype}"
            skip = None
            if tc == 0:
                skip = "the auto rule runs this clip direct (fits one chunk)"
            elif args.budget is not None and time.time() - start > args.budget:
                skip = f"--budget {args.budget:.0f} s spent"
            elif (prev := done.get((model, op, dtype, mode))) is not None:
                predicted = prev[1] * (size / prev[0]) ** 2
                if predicted > args.skip_over:
                    skip = f"predicted {predicted:.0f} s > --skip-over"
            if skip:
                C.log(f"skip {what}: {skip}")
                results.append({"spec": spec, "skipped": skip})
                continue
            C.log(f"{what}" + (f" t_chunk={tc}" if tc else "") + " ...")
            r = M.measure_config(__file__, spec, args.timeout, env)
            r["spec"] = spec
            results.append(r)
            if "error" in r:
                C.log(f"  ERROR {r['error'][-500:]}")
                continue
            done[(model, op, dtype, mode)] = (size, r["child_wall_s"])
            C.log(
                f"  first {r['first_call_s']:.1f} s, warm {r['warm_median_s']:.3f} s,"
                f" peak {r['peak_mib']:.0f} MiB ({r['mem_kind']})"
                + (f" [{r['warning']}]" if "warning" in r else "")
            )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return results, note


def table(args: argparse.Namespace, results: list[dict[str, Any]], note: str) -> str:
    info = next((r for r in results if "backend" in r), {})
    unit = "device MiB" if any(r.get("mem_kind") == "device" for r in results) else "RSS MiB"
    rows, missing = [], []
    for r in results:
        s = r["spec"]
        mode = s.get("mode", "direct")
        if mode == "chunked" and s.get("t_chunk"):
            mode = f"chunked ({s['t_chunk']})"
        if "error" in r or "skipped" in r:
            missing.append(
                f"- {s['model']} {s['op']} {mode} {s['size']}x{s['size']} {s['dtype']}: "
                + (r.get("skipped") or r["error"].splitlines()[0][:200])
            )
            continue
        rows.append(
            [
                s["model"],
                f"{s['frames']}x{s['size']}x{s['size']}",
                s["dtype"],
                s["op"],
                mode,
                r["compile_s"],
                r["first_call_s"],
                r["warm_median_s"],
                r.get("warm_cpu_median_s"),
                s.get("batch", 1) / r["warm_median_s"],
                r["peak_mib"],
                r["peak_minus_baseline_mib"],
                r["baseline_mib"],
            ]
        )
    precision = next((r["spec"].get("precision") for r in results), None) or "jax default"
    head = (
        f"### Throughput and memory (paper Fig. 4 setting): batch 1, random weights\n\n"
        f"Backend: {info.get('backend', '?')} ({info.get('device', '?')}), "
        f"{info.get('cpu_count', '?')} CPUs, jax {info.get('jax', '?')}, matmul precision "
        f"{precision}. Warm = median of up to {args.warm_runs} runs after the first (warm-up "
        f"excluded); first = compile + first run; videos/s = batch / warm; peak = {unit} "
        f"(device `memory_stats()` peak_bytes_in_use; RSS where the backend has none), execution "
        f"only (compiled in a separate process); peak-base = peak minus the baseline after "
        f"imports + weights + inputs. Chunked (n): Causal Cache, n = encoder video frames / "
        f"decoder latent frames per chunk. {note} "
        + C.code_line(getattr(args, "code", {}))
        + "\n\n"
    )
    body = C.markdown_table(
        [
            "model",
            "input TxHxW",
            "dtype",
            "op",
            "mode",
            "compile s",
            "first call s",
            "warm s",
            "warm CPU s",
            "videos/s (warm)",
            "peak MiB",
            "peak-base MiB",
            "baseline MiB",
        ],
        rows,
    )
    tail = ("\n\nNot measured:\n" + "\n".join(missing)) if missing else ""
    return head + body + tail + "\n"


def main(argv: list[str]) -> None:
    if M.child_main(argv):
        return
    args = parse_args(argv)
    if args.from_json:
        runs = []
        for path in args.from_json:
            with open(path) as f:
                runs.append(json.load(f))
        a = argparse.Namespace(**runs[0]["args"])
        a.warm_runs = max(r["args"]["warm_runs"] for r in runs)
        codes = {r["args"].get("code", {}).get("sha256_py") for r in runs}
        if len(codes) > 1:
            C.log(f"note: the runs measured different sources: {sorted(map(str, codes))}")
        results = [x for r in runs for x in r["results"]]
        print(table(a, results, runs[0].get("note", "")), flush=True)
        return
    t0 = time.time()
    results, note = run_sweep(args)
    text = table(args, results, note)
    print(text, flush=True)
    if args.out:
        C.write_json(
            args.out,
            {
                "benchmark": "throughput",
                "args": dict(vars(args)),
                "argv": argv,
                "total_wall_s": time.time() - t0,
                "results": results,
                "note": note,
                "markdown": text,
            },
        )
        C.log(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
