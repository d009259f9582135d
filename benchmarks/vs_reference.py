"""wfvae_jax side by side with the PyTorch reference: time, peak memory and agreement.

Needs a checkout of the reference (PKU-YuanGroup/WF-VAE, tested at d858bee) and a separate
Python with CPU PyTorch, diffusers, einops, safetensors and numpy: optional tooling, never a
project dependency, nothing of the reference is copied (it is imported from ``--reference``)::

    python benchmarks/vs_reference.py --reference /path/to/WF-VAE \\
        --torch_python /path/to/torch-venv/bin/python [--only 'S-256-*'] [--with_l] [--quick]
    python benchmarks/vs_reference.py --from_json A.json [B.json ...]   # reprint / merge runs

Method. For each model it builds the reference's own ``WFVAEModel`` with our config's fields
(random PyTorch init, seeded), ``save_pretrained``s it, converts that with
``wfvae convert`` and saves one seeded input (a uniform [-1, 1] video and a
standard-normal latent, ``.npy``) per shape, so both sides run the same weights on the same
input. Each configuration then runs in two fresh processes, the reference (``--torch_python``,
``torch.set_num_threads(--threads)``, ``inference_mode``) and ours (this Python), each timing
the first call (ours: compilation included, no persistent cache) and ``--warm`` more calls (the
best is reported), and reporting its peak RSS (``ru_maxrss``: the process's high-water mark,
what ``/usr/bin/time -f %M`` prints) and the RSS with only weights and input loaded. Chunked
runs: the reference's ``enable_tiling()`` (its own chunk selection, printed in the table) and
ours ``t_chunk`` (``--our_chunks``: ``ENC,DEC`` or ``auto``). Both outputs (encode: the
posterior mean; decode: the video) are saved and compared: the max abs difference shows the two
compute the same function on these weights. Ratios: speed = reference warm / ours warm (> 1:
ours is faster), memory = ours peak / reference peak (< 1: ours is lighter).

Prints a markdown table and writes ``benchmarks/results/vs_reference_S.json`` (the WF-VAE-S set;
``vs_reference_S_L.json`` with ``--with_l``, ``vs_reference_quick.json`` with ``--quick``, a
``_partial`` suffix with ``--only``; or ``--out``): one current file per set.
``--quick`` is a smoke run (the tiny config, 17x32x32, 1 warm call; a minute or two). The full
WF-VAE-S set (10 configurations, 20 processes) takes about 25-30 min on a 2-core CPU; run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402
import _vs_reference_workers as W  # noqa: E402

WORKERS = W.__file__
OPS = ("encode", "decode")

# name -> (model, T, H = W, op, mode). Names select with --only (fnmatch patterns).
_S_SET = [
    ("S", 33, 256, "direct"),
    ("S", 33, 256, "chunked"),
    ("S", 33, 128, "direct"),
    ("S", 33, 128, "chunked"),
    ("S", 129, 128, "chunked"),
]
_L_SET = [("L", 33, 256, "direct"), ("L", 33, 256, "chunked")]
_QUICK_SET = [("tiny", 17, 32, "direct"), ("tiny", 17, 32, "chunked")]
MODELS = {"S": "WF-VAE-S", "L": "WF-VAE-L", "tiny": "tiny"}


def config_name(model: str, t: int, size: int, op: str, mode: str) -> str:
    return f"{model}-{size}-{t}-{op}-{mode}"


def all_configs(with_l: bool = False, quick: bool = False) -> list[dict[str, Any]]:
    """Every configuration of a run, in order (``--quick``: the tiny smoke set only)."""
    rows = _QUICK_SET if quick else _S_SET + (_L_SET if with_l else [])
    out = []
    for model, t, size, mode in rows:
        for op in OPS:
            name = config_name(model, t, size, op, mode)
            out.append(dict(name=name, model=model, frames=t, size=size, op=op, mode=mode))
    return out


def select(configs: list[dict[str, Any]], only: str | None) -> list[dict[str, Any]]:
    """The configurations whose name matches one of the comma-separated ``--only`` patterns.

    Raises:
      ValueError: a pattern that matches nothing (the message lists the names).
    """
    if not only:
        return configs
    pats = [p.strip() for p in only.split(",") if p.strip()]
    for p in pats:
        if not any(fnmatch.fnmatchcase(c["name"], p) for c in configs):
            names = ", ".join(c["name"] for c in configs)
            raise ValueError(f"--only {p!r} matches no configuration; names: {names}")
    return [c for c in configs if any(fnmatch.fnmatchcase(c["name"], p) for p in pats)]


def parse_chunks(text: str) -> tuple[int, int] | None:
    """``--our_chunks``: ``"ENC,DEC"`` (video frames, latent frames) or ``"auto"`` (None)."""
    if text == "auto":
        return None
    try:
        enc, dec = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--our_chunks must be ENC,DEC (e.g. 8,2) or auto, got {text!r}") from None
    if enc < 1 or dec < 1:
        raise ValueError(f"--our_chunks must be positive, got {text!r}")
    return enc, dec


def default_tag(args: argparse.Namespace) -> str:
    """The default ``--out`` name's tag: one current file per set (``S``, ``S_L`` with
    ``--with_l``, ``quick``), ``_partial`` when ``--only`` picks part of it."""
    tag = "quick" if args.quick else "S_L" if args.with_l else "S"
    return tag + ("_partial" if args.only else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="root of a PKU-YuanGroup/WF-VAE checkout (required)")
    p.add_argument("--torch_python", help="a Python with CPU torch + diffusers (required)")
    p.add_argument("--only", default=None, help="comma list of fnmatch patterns of config names")
    p.add_argument("--with_l", action="store_true", help="add WF-VAE-L at 33x256x256")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny config, 17x32x32")
    p.add_argument("--warm", type=int, default=2, help="warm calls after the first (best taken)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the reference")
    p.add_argument(
        "--our_chunks",
        default="8,2",
        help="our t_chunk for the chunked rows: ENC,DEC (video, latent frames) or auto "
        "(wfvae_jax.auto_t_chunk; direct where the clip fits one chunk)",
    )
    p.add_argument("--preload", default=None, help="LD_PRELOAD for both sides (e.g. tcmalloc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workdir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "wfvae_jax", "vs_reference"),
        help="weights, inputs and outputs (reused across runs; weights are keyed by seed)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="per process, seconds")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument(
        "--from_json",
        nargs="+",
        default=None,
        help="only print the table of saved run(s), merged (a later file's configuration "
        "replaces an earlier one of the same name)",
    )
    args = p.parse_args(argv)
    if args.from_json:
        return args
    for flag in ("reference", "torch_python"):
        if not getattr(args, flag):
            p.error(f"--{flag} is required")
    try:
        args.chunks = parse_chunks(args.our_chunks)
        args.configs = select(all_configs(args.with_l, args.quick), args.only)
    except ValueError as e:
        p.error(str(e))
    if args.warm < 1:
        p.error("--warm must be >= 1")
    if not os.path.isfile(os.path.join(args.reference, "causalvideovae", "model", "__init__.py")):
        p.error(f"--reference {args.reference!r} is not a WF-VAE checkout (no causalvideovae/)")
    if not os.path.isfile(args.torch_python) or not os.access(args.torch_python, os.X_OK):
        p.error(f"--torch_python {args.torch_python!r} is not an executable")
    if args.out is None:
        args.out = os.path.join(HERE, "results", f"vs_reference_{default_tag(args)}.json")
    return args


# ----------------------------------------------------------------------------- parent


def run_worker(python: str, kind: str, spec: dict[str, Any], args: argparse.Namespace) -> dict:
    """Runs one worker in a fresh process; its tagged result, or ``{"error": ...}``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["WFVAE_JAX_NO_CACHE"] = "1"  # first calls compile, as in a fresh install
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if args.preload:
        env["LD_PRELOAD"] = args.preload
    cmd = [python, os.path.abspath(WORKERS), kind, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {args.timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(W.RESULT_TAG):
            out = json.loads(line[len(W.RESULT_TAG) :])
            out["process_wall_s"] = time.perf_counter() - t0
            return out
    return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-1500:]}"}


def prepare(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Weights (reference save_pretrained + our conversion) per model, inputs per shape."""
    import numpy as np

    from wfvae_jax.core.config import get_config
    from wfvae_jax.io import checkpoint

    paths: dict[str, dict[str, str]] = {}
    for model in sorted({c["model"] for c in args.configs}):
        cfg = get_config(MODELS[model])
        root = os.path.join(args.workdir, f"{MODELS[model]}_seed{args.seed}")
        ref_dir, ours_dir = os.path.join(root, "reference"), os.path.join(root, "wfvae_jax")
        if not os.path.isfile(os.path.join(ref_dir, "diffusion_pytorch_model.safetensors")):
            C.log(f"{MODELS[model]}: reference save_pretrained -> {ref_dir}")
            spec = {"reference": os.path.abspath(args.reference), "seed": args.seed}
            r = run_worker(
                args.torch_python,
                "ref_prepare",
                {**spec, "config": cfg.to_dict(), "out": ref_dir},
                args,
            )
            if "error" in r:
                raise RuntimeError(f"reference save_pretrained failed: {r['error']}")
        # An export from before the .npy layout would load through orbax: convert again.
        if not checkpoint.is_export_dir(ours_dir) or checkpoint.is_orbax_export(ours_dir):
            C.log(f"{MODELS[model]}: wfvae convert -> {ours_dir}")
            cmd = [sys.executable, "-m", "wfvae_jax", "convert", ref_dir, ours_dir, "--force"]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if p.returncode:
                raise RuntimeError(f"conversion failed: {p.stderr[-1500:]}")
        paths[model] = {"reference": ref_dir, "ours": ours_dir}
    os.makedirs(os.path.join(args.workdir, "inputs"), exist_ok=True)
    for c in args.configs:
        cfg = get_config(MODELS[c["model"]])
        t, s = c["frames"], c["size"]
        if c["op"] == "encode":
            shape = (1, t, s, s, 3)
        else:
            shape = (1, cfg.latent_frames(t), s // 8, s // 8, cfg.latent_dim)
        name = "x" if c["op"] == "encode" else "z"
        c["input"] = os.path.join(
            args.workdir, "inputs", f"{name}_{'x'.join(map(str, shape))}_seed{args.seed}.npy"
        )
        if not os.path.isfile(c["input"]):
            rng = np.random.default_rng(args.seed)
            if c["op"] == "encode":
                a = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
            else:
                a = rng.standard_normal(shape, dtype=np.float32)
            np.save(c["input"], a)
    return paths


def our_t_chunk(c: dict[str, Any], chunks: tuple[int, int] | None) -> int | None:
    """The t_chunk our worker passes: 0 direct, None auto, else ENC or DEC of --our_chunks."""
    if c["mode"] == "direct":
        return 0
    if chunks is None:
        return None
    return chunks[0] if c["op"] == "encode" else chunks[1]


def measure(args: argparse.Namespace, paths: dict[str, dict[str, str]]) -> list[dict]:
    import numpy as np

    results = []
    outdir = os.path.join(args.workdir, "outputs")
    os.makedirs(outdir, exist_ok=True)
    for c in args.configs:
        row = dict(c)
        base = {k: c[k] for k in ("op", "mode", "input")} | {"warm": args.warm}
        out_ref = os.path.join(outdir, c["name"] + "_reference.npy")
        out_ours = os.path.join(outdir, c["name"] + "_ours.npy")
        C.log(f"{c['name']}: reference ...")
        row["reference"] = run_worker(
            args.torch_python,
            "ref_run",
            {
                **base,
                "reference": os.path.abspath(args.reference),
                "weights": paths[c["model"]]["reference"],
                "threads": args.threads,
                "output": out_ref,
            },
            args,
        )
        C.log(f"{c['name']}: ours ...")
        row["ours"] = run_worker(
            sys.executable,
            "ours_run",
            {
                **base,
                "weights": paths[c["model"]]["ours"],
                "t_chunk": our_t_chunk(c, args.chunks),
                "output": out_ours,
            },
            args,
        )
        if "error" not in row["reference"] and "error" not in row["ours"]:
            a, b = np.load(out_ref), np.load(out_ours)
            row["max_abs_diff"] = float(np.abs(a - b).max()) if a.shape == b.shape else None
            row["output_shape"] = list(b.shape)
        for path in (out_ref, out_ours):
            if os.path.exists(path):
                os.remove(path)
        for side in ("reference", "ours"):
            r = row[side]
            msg = r["error"][-300:] if "error" in r else _cell(r)
            C.log(f"  {side}: {msg}")
        results.append(row)
    return results


# ----------------------------------------------------------------------------- table


def _cell(r: dict[str, Any] | None) -> str:
    """``warm s (first s), peak MiB`` of one side, or ``–``."""
    if not r or "error" in r:
        return "–"
    return f"{min(r['warm_s']):.2f} s (first {r['first_s']:.2f} s), {r['peak_rss_mib']:,.0f} MiB"


def ratios(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """(speed = reference warm / ours warm, memory = ours peak / reference peak)."""
    ref, ours = row.get("reference") or {}, row.get("ours") or {}
    if "warm_s" not in ref or "warm_s" not in ours:
        return None, None
    return min(ref["warm_s"]) / min(ours["warm_s"]), ours["peak_rss_mib"] / ref["peak_rss_mib"]


def _mode(row: dict[str, Any]) -> str:
    if row["mode"] == "direct":
        return "direct"
    ref_c = (row.get("reference") or {}).get("chunks")
    ours_c = (row.get("ours") or {}).get("t_chunk", "?")
    ref_s = f"enable_tiling {ref_c[0]}/{ref_c[1]}" if ref_c else "enable_tiling"
    ours_s = "direct (auto)" if ours_c == 0 else f"t_chunk={ours_c}"
    return f"chunked (ref {ref_s} / ours {ours_s})"


def table(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The markdown table (one row per configuration) with a header naming the setting."""
    lines = [
        f"### wfvae_jax vs the PyTorch reference, same weights and input ({info.get('when', '')})",
        "",
        f"Reference: torch {info.get('torch', '?')}, {info.get('threads', '?')} threads, eager; "
        f"ours: jax {info.get('jax', '?')} ({info.get('backend', '?')}). Time: warm = best of "
        f"{info.get('warm', '?')} calls after the first (first call: ours includes compilation). "
        f"Memory: peak RSS of the process. Speed = reference warm / ours warm (> 1: ours "
        f"faster); memory = ours / reference peak (< 1: ours lighter). Chunks: encoder video "
        f"frames / decoder latent frames. Weights: random, seed {info.get('seed', '?')}; "
        f"allocator: {info.get('preload') or 'glibc (default)'}.",
        "",
        "| model | input | op | mode | reference | ours | ours vs reference | max abs diff |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for row in results:
        speed, mem = ratios(row)
        vs = "–" if speed is None else f"{speed:.2f}× speed, {mem:.2f}× memory"
        diff = row.get("max_abs_diff")
        lines.append(
            f"| {MODELS[row['model']]} | 1×{row['frames']}×{row['size']}² | {row['op']} | "
            f"{_mode(row)} | {_cell(row.get('reference'))} | {_cell(row.get('ours'))} | {vs} | "
            + ("–" if diff is None else f"{diff:.1e}")
            + " |"
        )
    loaded = {
        (MODELS[r["model"]], side): r[side]["loaded_rss_mib"]
        for r in results
        for side in ("reference", "ours")
        if "loaded_rss_mib" in (r.get(side) or {})
    }
    if loaded:
        parts = [f"{m} {side} {v:,.0f} MiB" for (m, side), v in sorted(loaded.items())]
        lines += [
            "",
            "RSS with only weights and input loaded (last run of each): " + ", ".join(parts),
        ]
    errors = [
        f"- {r['name']} {side}: {r[side]['error'].splitlines()[-1][:300]}"
        for r in results
        for side in ("reference", "ours")
        if "error" in (r.get(side) or {})
    ]
    if errors:
        lines += ["", "Failed:", *errors]
    return "\n".join(lines) + "\n"


def merged_table(paths: list[str]) -> str:
    """The table of saved runs; rows keep the first file's order, later files replace rows."""
    rows: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        info = info or run["info"]
        for row in run["results"]:
            rows[row["name"]] = row
    return table(list(rows.values()), info)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(merged_table(args.from_json), flush=True)
        return 0
    sys.path.insert(0, REPO)
    t0 = time.time()
    paths = prepare(args)
    results = measure(args, paths)
    ok = [r for r in results if "error" not in r["reference"] and "error" not in r["ours"]]
    first = ok[0] if ok else {}
    info = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": (first.get("reference") or {}).get("torch"),
        "threads": (first.get("reference") or {}).get("threads"),
        "jax": (first.get("ours") or {}).get("jax"),
        "backend": (first.get("ours") or {}).get("backend"),
        "warm": args.warm,
        "seed": args.seed,
        "preload": args.preload,
        "cpu_count": os.cpu_count(),
        "our_chunks": args.our_chunks,
        "git_head": subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    text = table(results, info)
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "benchmark": "vs_reference",
                "argv": argv,
                "info": info,
                "results": results,
                "total_wall_s": time.time() - t0,
                "markdown": text,
            },
            f,
            indent=2,
        )
    C.log(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
