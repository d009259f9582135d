"""Causal Cache benchmark: peak memory and wall time of direct vs chunked encode and decode.

For one model (default WF-VAE-S, random weights) at ``--size`` x ``--size`` and each T in
``--frames``, measures ``wfvae_jax.encode``/``decode`` without and with ``t_chunk`` (Causal Cache,
``wfvae_jax.inference.causal_cache``). Each (T, op, mode) runs in fresh child processes (see
``benchmarks/_measure.py``): a compile child (compile time, compile peak memory, XLA's buffer
accounting) and a run child (first call from the compilation cache, median of the warm runs,
execution peak memory = peak RSS, or device peak bytes on GPU, minus the baseline after imports,
weights and inputs). The first-call column is compile + first run: what a fresh process pays.

Goals checked (the Causal Cache issue): chunked peak memory flat in T (T=129 / T=33 <= 1.2),
chunked peak <= 0.35x direct at T=129, chunked warm time <= 1.3x direct.

Usage::

    python benchmarks/causal_cache.py --quick                  # 64x64, T = 17, 33, ~minutes
    nice -n 10 python benchmarks/causal_cache.py --size 128 --frames 17,33,65,129 --warm-runs 2 \\
        --warm-budget 200 --out benchmarks/results/causal_cache_128.json
    python benchmarks/causal_cache.py --size 128 --frames 17,33,65,129 --enc-chunk 16 --dec-chunk 4
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

FLAT_MAX = 1.2  # chunked peak(T=129) / peak(T=33)
MEM_MAX = 0.35  # chunked / direct peak at T=129
TIME_MAX = 1.3  # chunked / direct warm time


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="WF-VAE-S")
    p.add_argument("--size", type=int, default=256, help="H = W in pixels (multiple of 8)")
    p.add_argument(
        "--frames", default="17,33,65,129", help="comma list of T = 1 + d k (d: the model's)"
    )
    p.add_argument("--enc-chunk", type=int, default=8, help="encoder t_chunk, video frames")
    p.add_argument("--dec-chunk", type=int, default=4, help="decoder t_chunk, latent frames")
    p.add_argument("--ops", default="encode,decode")
    p.add_argument("--modes", default="direct,chunked")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--warm-runs", type=int, default=3, help="warm runs per config (median)")
    p.add_argument(
        "--warm-budget", type=float, default=300.0, help="stop warm runs after this many seconds"
    )
    p.add_argument(
        "--skip-over",
        type=float,
        default=900.0,
        help="skip a config whose predicted child time (scaled linearly in T from the previous "
        "T of the same op and mode) exceeds this many seconds",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="per child process, seconds")
    p.add_argument("--quick", action="store_true", help="64x64, T = 17,33, 2 warm runs")
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
        help="only print the tables of saved run(s); several files are merged (later files "
        "replace earlier results of the same T, op and mode; frames and ops are united)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.frames, args.warm_runs = 64, "17,33", 2
    args.frames = [int(f) for f in args.frames.split(",")]
    args.ops = args.ops.split(",")
    args.modes = args.modes.split(",")
    M.check_frames(p, [args.model], args.frames)
    if args.size % 8:
        p.error("--size must be a multiple of 8")
    M.check_enc_chunk(p, [args.model], args.enc_chunk)
    return args


def run_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    cache_dir = tempfile.mkdtemp(prefix="wfvae_bench_cache_")
    env, args.code = C.snapshot_package(tempfile.mkdtemp(dir=cache_dir), args.package_dir)
    results: list[dict[str, Any]] = []
    last_wall: dict[tuple[str, str], tuple[int, float]] = {}
    try:
        for t in args.frames:
            for op in args.ops:
                for mode in args.modes:
                    tc = None
                    if mode == "chunked":
                        tc = args.enc_chunk if op == "encode" else args.dec_chunk
                    spec = {
                        "op": op,
                        "mode": mode,
                        "model": args.model,
                        "size": args.size,
                        "frames": t,
                        "t_chunk": tc,
                        "dtype": args.dtype,
                        "batch": 1,
                        "warm_runs": args.warm_runs,
                        "warm_budget_s": args.warm_budget,
                        "cache_dir": cache_dir,
                        "seed": 0,
                    }
                    prev = last_wall.get((op, mode))
                    if prev is not None:
                        predicted = prev[1] * t / prev[0]
                        if predicted > args.skip_over:
                            C.log(f"skip {op} {mode} T={t}: predicted {predicted:.0f} s")
                            results.append(
                                {"spec": spec, "skipped": f"predicted {predicted:.0f} s"}
                            )
                            continue
                    C.log(f"{op} {mode} T={t} {args.size}x{args.size} t_chunk={tc} ...")
                    r = M.measure_config(__file__, spec, args.timeout, env)
                    r["spec"] = spec
                    results.append(r)
                    if "error" in r:
                        C.log(f"  ERROR {r['error'][-500:]}")
                        continue
                    last_wall[(op, mode)] = (t, r["child_wall_s"])
                    C.log(
                        f"  first {r['first_call_s']:.1f} s, warm {r['warm_median_s']:.2f} s, "
                        f"peak-baseline {r['peak_minus_baseline_mib']:.0f} MiB, "
                        f"compile peak-baseline {r['compile_peak_minus_baseline_mib']:.0f} MiB"
                        + (f" [{r['warning']}]" if "warning" in r else "")
                    )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return results


def _find(results, t, op, mode):
    for r in results:
        s = r["spec"]
        if (s["frames"], s["op"], s["mode"]) == (t, op, mode) and "error" not in r:
            if "skipped" not in r:
                return r
    return None


def _combined(results, t, mode):
    """encode + decode: times add, peak is the larger of the two (separate processes)."""
    e, d = _find(results, t, "encode", mode), _find(results, t, "decode", mode)
    if e is None or d is None:
        return None
    return {
        "first_call_s": e["first_call_s"] + d["first_call_s"],
        "warm_median_s": e["warm_median_s"] + d["warm_median_s"],
        "warm_cpu_median_s": e["warm_cpu_median_s"] + d["warm_cpu_median_s"],
        "peak_minus_baseline_mib": max(e["peak_minus_baseline_mib"], d["peak_minus_baseline_mib"]),
        "peak_mib": max(e["peak_mib"], d["peak_mib"]),
        "baseline_mib": max(e["baseline_mib"], d["baseline_mib"]),
        "compile_peak_minus_baseline_mib": max(
            e["compile_peak_minus_baseline_mib"], d["compile_peak_minus_baseline_mib"]
        ),
        "xla_temp_mib": max(e.get("xla_temp_mib", 0.0), d.get("xla_temp_mib", 0.0)),
    }


def _get(r, key):
    return None if r is None else r.get(key)


def tables(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    ops = [*args.ops, "enc+dec"] if set(args.ops) == {"encode", "decode"} else args.ops
    rows_t, rows_m = [], []
    per: dict[tuple[int, str], tuple[Any, Any]] = {}
    for t in args.frames:
        for op in ops:
            if op == "enc+dec":
                d, c = _combined(results, t, "direct"), _combined(results, t, "chunked")
            else:
                d, c = _find(results, t, op, "direct"), _find(results, t, op, "chunked")
            per[(t, op)] = (d, c)
            rows_t.append(
                [
                    t,
                    op,
                    _get(d, "first_call_s"),
                    _get(c, "first_call_s"),
                    _get(d, "warm_median_s"),
                    _get(c, "warm_median_s"),
                    C.ratio(_get(c, "warm_median_s"), _get(d, "warm_median_s")),
                    _get(d, "warm_cpu_median_s"),
                    _get(c, "warm_cpu_median_s"),
                    C.ratio(_get(c, "warm_cpu_median_s"), _get(d, "warm_cpu_median_s")),
                ]
            )
            rows_m.append(
                [
                    t,
                    op,
                    _get(d, "baseline_mib"),
                    _get(d, "peak_mib"),
                    _get(d, "peak_minus_baseline_mib"),
                    _get(c, "peak_mib"),
                    _get(c, "peak_minus_baseline_mib"),
                    C.ratio(_get(c, "peak_minus_baseline_mib"), _get(d, "peak_minus_baseline_mib")),
                    C.ratio(_get(c, "peak_mib"), _get(d, "peak_mib")),
                    _get(d, "compile_peak_minus_baseline_mib"),
                    _get(c, "compile_peak_minus_baseline_mib"),
                    _get(d, "xla_temp_mib"),
                    _get(c, "xla_temp_mib"),
                ]
            )
    mem_unit = "device MiB" if any(r.get("mem_kind") == "device" for r in results) else "RSS MiB"
    info = next((r for r in results if "backend" in r), {})
    chunks = {
        op: sorted({r["spec"]["t_chunk"] for r in results if r["spec"]["op"] == op} - {None})
        for op in ("encode", "decode")
    }
    enc_c = "/".join(map(str, chunks["encode"])) or args.enc_chunk
    dec_c = "/".join(map(str, chunks["decode"])) or args.dec_chunk
    code = C.code_line(getattr(args, "code", {}))
    if getattr(args, "code_notes", None):
        code = "Merged runs: " + " ".join(args.code_notes)
    head = (
        f"### Causal Cache: {args.model}, {args.size}x{args.size}, {args.dtype}, batch 1, "
        f"random weights; encoder t_chunk={enc_c} frames, decoder t_chunk="
        f"{dec_c} latent frames\n\n"
        f"Backend: {info.get('backend', '?')} ({info.get('device', '?')}), "
        f"{info.get('cpu_count', '?')} CPUs, jax {info.get('jax', '?')}. "
        f"Warm = median of up to {args.warm_runs} runs; first = compile + first run; "
        "enc+dec: times summed, peak = max of the two (separate processes). " + code + "\n"
    )
    t_table = C.markdown_table(
        [
            "T",
            "op",
            "direct first s",
            "chunked first s",
            "direct warm s",
            "chunked warm s",
            "time ratio c/d (warm)",
            "direct warm CPU s",
            "chunked warm CPU s",
            "CPU-time ratio c/d",
        ],
        rows_t,
    )
    m_table = C.markdown_table(
        [
            "T",
            "op",
            f"baseline {mem_unit}",
            "direct peak",
            "direct peak-base",
            "chunked peak",
            "chunked peak-base",
            "ratio c/d (peak-base)",
            "ratio c/d (peak)",
            "compile peak-base direct",
            "compile peak-base chunked",
            "XLA temp direct",
            "XLA temp chunked",
        ],
        rows_m,
    )
    skipped = [r for r in results if "skipped" in r or "error" in r]
    notes = ""
    if skipped:
        notes = "\nNot measured:\n" + "\n".join(
            f"- {r['spec']['op']} {r['spec']['mode']} T={r['spec']['frames']}: "
            + (r.get("skipped") or r["error"].splitlines()[0][:200])
            for r in skipped
        )
    warn = [r for r in results if "warning" in r]
    if warn:
        notes += "\nWarnings:\n" + "\n".join(
            f"- {r['spec']['op']} {r['spec']['mode']} T={r['spec']['frames']}: {r['warning']}"
            for r in warn
        )
    return (
        head + "\nWall time (seconds; CPU s = process user + system seconds, all threads, which "
        "other processes on shared cores disturb less than wall time)\n\n"
        + t_table
        + f"\n\nPeak memory ({mem_unit}; peak-base = execution peak minus the baseline after "
        "imports + weights + inputs; compile peak-base from the separate compile process; "
        "XLA temp = the executable's temp buffers from memory_analysis())\n\n"
        + m_table
        + "\n"
        + notes
        + "\n"
        + goals(args, per)
    )


def goals(args: argparse.Namespace, per: dict) -> str:
    """The issue's three goals, PASS/FAIL per op, on the peak-minus-baseline memory."""
    t_hi = max(args.frames)
    t_lo = 33 if 33 in args.frames and 33 < t_hi else min(args.frames)
    rows = []
    for op in [*args.ops, "enc+dec"] if set(args.ops) == {"encode", "decode"} else args.ops:
        d_hi, c_hi = per.get((t_hi, op), (None, None))
        _, c_lo = per.get((t_lo, op), (None, None))
        flat = C.ratio(_get(c_hi, "peak_minus_baseline_mib"), _get(c_lo, "peak_minus_baseline_mib"))
        mem = C.ratio(_get(c_hi, "peak_minus_baseline_mib"), _get(d_hi, "peak_minus_baseline_mib"))

        def worst(key, op=op):
            rs = [
                C.ratio(_get(per[(t, op)][1], key), _get(per[(t, op)][0], key)) for t in args.frames
            ]
            rs = [x for x in rs if x is not None]
            return max(rs) if rs else None

        def verdict(x, lim):
            return "-" if x is None else ("PASS" if x <= lim else "FAIL")

        w_wall, w_cpu = worst("warm_median_s"), worst("warm_cpu_median_s")
        rows.append(
            [
                op,
                flat,
                verdict(flat, FLAT_MAX),
                mem,
                verdict(mem, MEM_MAX),
                w_wall,
                verdict(w_wall, TIME_MAX),
                w_cpu,
                verdict(w_cpu, TIME_MAX),
            ]
        )
    return (
        f"\nGoals (chunked; memory = peak-base): flat in T = peak(T={t_hi}) / peak(T={t_lo}) "
        f"<= {FLAT_MAX}; chunked / direct peak at T={t_hi} <= {MEM_MAX}; worst chunked / direct "
        f"warm time (wall, and CPU) over all T <= {TIME_MAX}\n\n"
        + C.markdown_table(
            [
                "op",
                f"peak T={t_hi} / T={t_lo}",
                "flat",
                f"chunked/direct peak T={t_hi}",
                "memory",
                "worst wall-time ratio",
                "wall time",
                "worst CPU-time ratio",
                "CPU time",
            ],
            rows,
        )
        + "\n"
    )


def merge_saved(paths: list[str]) -> tuple[argparse.Namespace, list[dict[str, Any]]]:
    """Arguments and results of saved runs, merged (see ``--from-json``)."""
    merged: dict[tuple[int, str, str], dict[str, Any]] = {}
    base: dict[str, Any] = {}
    notes: list[str] = []
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        a = saved["args"]
        if not base:
            base = dict(a)
        else:
            for key in ("model", "size", "dtype"):
                if a.get(key) != base.get(key):
                    raise ValueError(f"{path}: {key}={a.get(key)!r} differs from {base[key]!r}")
            base["frames"] = sorted(set(base["frames"]) | set(a["frames"]))
            base["ops"] = [o for o in ("encode", "decode") if o in set(base["ops"]) | set(a["ops"])]
            base["warm_runs"] = max(base["warm_runs"], a["warm_runs"])
        modes = sorted({r["spec"]["mode"] for r in saved["results"]})
        ops = sorted({r["spec"]["op"] for r in saved["results"]})
        notes.append(
            f"[{os.path.basename(path)}: {'+'.join(ops)} {'+'.join(modes)}] "
            + C.code_line(a.get("code", {}))
        )
        for r in saved["results"]:
            sp = r["spec"]
            key = (sp["frames"], sp["op"], sp["mode"])
            if key not in merged or "error" not in r and "skipped" not in r:
                merged[key] = r
    if len(paths) > 1:
        base["code_notes"] = notes
    return argparse.Namespace(**base), list(merged.values())


def main(argv: list[str]) -> None:
    if M.child_main(argv):
        return
    args = parse_args(argv)
    if args.from_json:
        saved_args, results = merge_saved(args.from_json)
        print(tables(saved_args, results), flush=True)
        return
    t0 = time.time()
    results = run_sweep(args)
    text = tables(args, results)
    print(text, flush=True)
    if args.out:
        C.write_json(
            args.out,
            {
                "benchmark": "causal_cache",
                "args": {k: v for k, v in vars(args).items()},
                "argv": argv,
                "total_wall_s": time.time() - t0,
                "results": results,
                "markdown": text,
            },
        )
        C.log(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
