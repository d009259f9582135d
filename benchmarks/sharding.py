"""Spatial sharding benchmark: per-device memory of encode/decode split over 1, 2, 4 devices.

For one model (default WF-VAE-S, random weights) and each size in ``--sizes`` (1 x T x S x S
video, T = ``--frames``), compiles ``wfvae_jax.encode`` / ``decode`` (direct and Causal Cache
chunked) for ``mesh=None`` (one device) and ``data=1,space=N`` for each N in ``--space`` and
reads XLA's per-device buffer accounting, ``compiled.memory_analysis()``: arguments (the
replicated weights + this device's input slice), output slice, temporaries (the activations).
Nothing is executed unless ``--execute`` (then also ``memory_stats()["peak_bytes_in_use"]`` of
every device, where the backend has it: GPU/TPU, not CPU). Each configuration compiles in a
fresh child process (``benchmarks/_common.py``), one at a time (WF-VAE-S at 512^2 needs a few
GiB of host memory to compile). On CPU the N devices are
``XLA_FLAGS=--xla_force_host_platform_device_count``.

The goal (the spatial sharding issue): per-device activation memory ~1/N plus a small constant;
the table gives ``temp`` and ``total`` relative to one device.

Usage::

    python benchmarks/sharding.py --quick                        # WF-VAE-S 64^2, T=9 (minutes)
    nice -n 10 python benchmarks/sharding.py --out benchmarks/results/sharding_S.json
    python benchmarks/sharding.py --from-json benchmarks/results/sharding_S.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402
import _measure as M  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="WF-VAE-S")
    p.add_argument("--sizes", default="256,512", help="comma list of H = W (multiples of 8*N)")
    p.add_argument("--frames", type=int, default=33, help="video frames T = 1 + d k")
    p.add_argument("--space", default="1,2,4", help="comma list of 'space' device counts")
    p.add_argument("--enc-chunk", type=int, default=8, help="encoder t_chunk, video frames")
    p.add_argument("--dec-chunk", type=int, default=2, help="decoder t_chunk, latent frames")
    p.add_argument("--ops", default="encode,decode")
    p.add_argument("--modes", default="direct,chunked")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--execute", action="store_true", help="also run once; device memory_stats")
    p.add_argument("--timeout", type=float, default=3600.0, help="per child process, seconds")
    p.add_argument("--quick", action="store_true", help="64x64, T = 9")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--from-json", default=None, help="only print the tables of a saved run")
    p.add_argument(
        "--package-dir", default=None, help="wfvae_jax package to measure (default: this tree's)"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.frames = "64", 9
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.space = [int(s) for s in args.space.split(",")]
    args.ops, args.modes = args.ops.split(","), args.modes.split(",")
    if args.child is None:
        M.check_frames(p, [args.model], [args.frames])
        M.check_enc_chunk(p, [args.model], args.enc_chunk)
    return args


# ----------------------------------------------------------------------------- child


def _abstract(tree: Any, sharding: Any) -> Any:
    import jax

    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: compile one (op, mode, size, space) configuration; optionally run it once."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import wfvae_jax
    from wfvae_jax.inference import api, sharding

    cfg = wfvae_jax.get_config(spec["model"])
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[spec["dtype"]]
    op, tc, n, s, t = spec["op"], spec["t_chunk"], spec["space"], spec["size"], spec["frames"]
    mesh = None if n == 1 else sharding.make_mesh(1, n)
    rep = None if mesh is None else NamedSharding(mesh, P())
    act = None if mesh is None else sharding.activation_sharding(mesh)
    shapes = jax.eval_shape(lambda k: wfvae_jax.init_params(cfg, k), jax.random.key(0))
    if op == "encode":
        in_shape = (1, t, s, s, 3)
    else:
        in_shape = (1, cfg.latent_frames(t), s // 8, s // 8, cfg.latent_dim)
    x = jax.ShapeDtypeStruct(in_shape, jnp.float32, sharding=act)
    lower = api.lower_encode if op == "encode" else api.lower_decode
    probe = C.MemoryProbe()
    probe.set_baseline()
    t0 = time.perf_counter()
    tc = M.api_t_chunk(tc)
    lowered = lower(_abstract(shapes, rep), x, cfg, dtype=dtype, t_chunk=tc, mesh=mesh)
    compiled = lowered.compile()
    ma = compiled.memory_analysis()
    out: dict[str, Any] = {
        "spec": spec,
        "input_shape": list(in_shape),
        "compile_s": time.perf_counter() - t0,
        "compile_rss_peak_mib": C.peak_rss_mib(),
        **C.backend_info(),
        "per_device_mib": {
            k: getattr(ma, f"{k}_size_in_bytes") / C.MIB
            for k in ("argument", "output", "temp", "alias")
        },
    }
    m = out["per_device_mib"]
    # Live buffers never exceed arguments + outputs + the temp allocation (XLA packs all
    # temporaries, with reuse, into one temp buffer); XLA's own peak figure is kept as well.
    m["total"] = m["argument"] + m["output"] + m["temp"] - m["alias"]
    m["xla_peak"] = ma.peak_memory_in_bytes / C.MIB
    if spec.get("execute"):
        params = M.random_params(cfg)
        z = M.random_video(in_shape) if op == "encode" else M.random_video(in_shape, 1)
        if mesh is not None:
            params, z = sharding.replicate(params, mesh), jax.device_put(z, act)
        for d in jax.devices():
            d.memory_stats()  # touch, so peaks below are of this run only where supported
        C.block(compiled(params, z))
        stats = [d.memory_stats() for d in (mesh.devices.flat if mesh else jax.devices()[:1])]
        out["device_peak_mib"] = [
            None if not st or "peak_bytes_in_use" not in st else st["peak_bytes_in_use"] / C.MIB
            for st in stats
        ]
    return out


# ----------------------------------------------------------------------------- parent


def run_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    package = args.package_dir or os.path.join(os.path.dirname(HERE), "wfvae_jax")
    env, args.code = C.snapshot_package(tempfile.mkdtemp(prefix="wfvae_shard_bench_"), package)
    count = max(args.space)
    flags = os.environ.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    results = []
    for size in args.sizes:
        for op in args.ops:
            for mode in args.modes:
                for n in args.space:
                    tc = None
                    if mode == "chunked":
                        tc = args.enc_chunk if op == "encode" else args.dec_chunk
                    spec = {
                        "op": op,
                        "mode": mode,
                        "model": args.model,
                        "size": size,
                        "frames": args.frames,
                        "t_chunk": tc,
                        "space": n,
                        "dtype": args.dtype,
                        "execute": args.execute,
                    }
                    C.log(f"{op} {mode} {size}x{size} space={n} t_chunk={tc} ...")
                    r = C.run_child(__file__, spec, args.timeout, env)
                    r["spec"] = spec
                    results.append(r)
                    if "error" in r:
                        C.log(f"  ERROR {r['error'][-800:]}")
                    else:
                        m = r["per_device_mib"]
                        C.log(
                            f"  temp {m['temp']:.0f} MiB, total {m['total']:.0f} MiB per device "
                            f"(compile {r['compile_s']:.0f} s, RSS {r['compile_rss_peak_mib']:.0f}"
                            " MiB)"
                        )
    return results


def tables(payload: dict[str, Any]) -> str:
    results = payload["results"]
    ok = [r for r in results if "error" not in r]
    base = {
        (r["spec"]["size"], r["spec"]["op"], r["spec"]["mode"]): r["per_device_mib"]
        for r in ok
        if r["spec"]["space"] == 1
    }
    rows = []
    for r in ok:
        sp, m = r["spec"], r["per_device_mib"]
        b = base.get((sp["size"], sp["op"], sp["mode"]))
        mode = "direct" if sp["t_chunk"] is None else f"chunked ({sp['t_chunk']})"
        dev = r.get("device_peak_mib")
        rows.append(
            [
                f"1x{sp['frames']}x{sp['size']}²",
                sp["op"],
                mode,
                sp["space"],
                m["argument"],
                m["output"],
                m["temp"],
                m["total"],
                C.ratio(m["temp"], b and b["temp"]),
                1.0 / sp["space"],
                C.ratio(m["total"], b and b["total"]),
                None if not dev or None in dev else max(dev),
            ]
        )
    head = [
        "input",
        "op",
        "mode",
        "space",
        "arg MiB",
        "out MiB",
        "temp MiB",
        "total MiB",
        "temp / 1 dev",
        "1/N",
        "total / 1 dev",
        "device peak MiB",
    ]
    lines = [
        f"Model {payload['model']} (random weights), {payload['dtype']}, per device, from "
        "compiled.memory_analysis(); arg = replicated weights + input slice; out = output "
        "slice; temp = XLA's temporaries (activations); total = arg + out + temp; device "
        "peak = max over devices of memory_stats() after one run (- where not run or the "
        "backend has none).",
        C.markdown_table(head, rows),
    ]
    errs = [r for r in results if "error" in r]
    if errs:
        lines.append(
            f"{len(errs)} configuration(s) failed: "
            + "; ".join("{op} {mode} {size} space={space}".format(**e["spec"]) for e in errs)
        )
    if "code" in payload:
        lines.append(C.code_line(payload["code"]))
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child is not None:
        C.emit_result(measure(json.loads(args.child)))
        return
    if args.from_json:
        with open(args.from_json) as f:
            print(tables(json.load(f)))
        return
    results = run_sweep(args)
    payload = {
        "benchmark": "sharding",
        "model": args.model,
        "dtype": args.dtype,
        "frames": args.frames,
        "code": args.code,
        "results": results,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(tables(payload))
    if args.out:
        C.write_json(args.out, payload)
        C.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
