"""wfvae_jax training side by side with the PyTorch reference's: losses, held-out PSNR, step time.

Needs a checkout of the reference (PKU-YuanGroup/WF-VAE, tested at d858bee) and a Python with
CPU torch, diffusers, einops, safetensors and numpy: optional tooling, never a project
dependency; nothing of the reference is copied (``reference_trainer.py`` imports it)::

    python benchmarks/train_vs_reference.py --reference /path/to/WF-VAE \\
        --torch_python /path/to/torch-venv/bin/python [--steps 300] [--videos DIR]
    python benchmarks/train_vs_reference.py --from_json RESULT.json   # reprint, redraw

Method. Both sides train the same small WF-VAE (``--model``, default ``tiny``) from the same
initial weights: the reference's own seeded initialisation of ``WFVAEModel`` and of
``LPIPSWithDiscriminator3D``'s discriminator (``weights_init``, ``ndf`` 64, 4 layers), converted
for ours. They see the same sequence of real-clip batches (``--batch`` windows of ``--frames``
frames, short side resized to ``--size`` and center-cropped, from the training videos; a seeded
shuffle per epoch) and the same random draws: each step's posterior noise and discriminator
dropout masks come from ``reference_trainer.draws`` (NumPy, seeded by the step), which both
workers compute (their checksums are compared). The reference runs ``train_ddp.py``'s loop body
(``reference_trainer.ReferenceTrainer``: AdamW, GradScaler, EMA, G/D alternation,
``--wavelet_loss``) with the GAN on from step 0 (``disc_start 0``, as ``examples/train_ddp.sh``);
ours runs ``generator_update`` / ``discriminator_update`` under ``replay_draws``. LPIPS uses the
seeded random VGG16 of ``../shared/README.md`` on both sides (a real VGG16 needs a download).
Every ``--eval_every`` steps both reconstruct the held-out clips (posterior mode, float32) and
the driver computes their PSNR with ``wfvae_jax.metrics.psnr``.

Each side runs in its own fresh process, one after the other (the reference first: it writes
the initial weights), with ``--threads`` torch threads; ours uses XLA's default CPU threading.
Step times are wall clock per step (ours: ``block_until_ready``); "warm" is the median over the
steps after the first ``--skip`` of each kind (ours: compilation is in the first ones).

Writes ``--out`` (JSON: settings, per-step losses and times of both, evaluations, summary) and
``--png`` (loss curves, per-step relative difference, held-out PSNR), and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]  # this checkout's wfvae_jax, and reference_trainer
from _train_vs_reference_workers import DISC_KEYS, GEN_KEYS, RESULT_TAG, log  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results", "train_vs_reference.json")
DEFAULT_PNG = os.path.join(REPO, "docs", "images", "train_vs_reference.png")
# Held out: carphone (its re-encoded copy carphone_distorted.mp4 is not trained on either).
TRAIN_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "tree.avi")
HELDOUT = (
    ("carphone_pristine.mp4", 0),
    ("carphone_pristine.mp4", 40),
    ("carphone_pristine.mp4", 80),
)
WORKERS = os.path.join(HERE, "_train_vs_reference_workers.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="root of a PKU-YuanGroup/WF-VAE checkout")
    p.add_argument("--torch_python", help="a Python with CPU torch + diffusers")
    p.add_argument("--videos", default=os.path.join(os.path.dirname(REPO), "shared", "videos"))
    p.add_argument("--model", default="tiny", help="a wfvae_jax.core.config name")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="both AdamWs (train_ddp.py: 1e-5)")
    p.add_argument("--eval_every", type=int, default=25)
    p.add_argument(
        "--disc_ndf", type=int, default=64, help="discriminator width (the reference's: 64)"
    )
    p.add_argument(
        "--parallel",
        action="store_true",
        help="run both sides at once (halves the wall time; each side's step times then include "
        "the other's load)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads (on a CPU other jobs share, 1 avoids OpenMP oversubscription)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", type=int, default=3, help="first steps of each kind not timed")
    p.add_argument("--workdir", default=os.path.join("/tmp", "wfvae_train_vs_reference"))
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--png", default=DEFAULT_PNG, help="the plot")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, help="per worker, seconds")
    p.add_argument("--from_json", help="reprint and redraw a saved result")
    p.add_argument(
        "--reuse", action="store_true", help="take a side's steps from WORKDIR/<side>.json if there"
    )
    args = p.parse_args(argv)
    if not args.from_json:
        for flag in ("reference", "torch_python"):
            if not getattr(args, flag):
                p.error(f"--{flag} is required (or --from_json)")
        if not os.path.isfile(os.path.join(args.reference, "train_ddp.py")):
            p.error(f"--reference {args.reference!r} has no train_ddp.py")
        for name in TRAIN_VIDEOS + tuple(n for n, _ in HELDOUT):
            if not os.path.isfile(os.path.join(args.videos, name)):
                p.error(f"--videos {args.videos!r} lacks {name} (../shared/videos has them)")
    return args


# ------------------------------------------------------------------------------ driver


def prepare_data(args: argparse.Namespace) -> tuple[str, str]:
    """Training windows and held-out clips as ``.npy`` (float32 NTHWC in [-1, 1])."""
    import numpy as np

    from wfvae_jax.io.decode import count_frames
    from wfvae_jax.io.windows import read_video

    tag = f"T{args.frames}_S{args.size}"
    windows_path = os.path.join(args.workdir, f"windows_{tag}.npy")
    heldout_path = os.path.join(args.workdir, f"heldout_{tag}.npy")
    if not os.path.isfile(windows_path):
        windows = []
        for name in TRAIN_VIDEOS:
            path = os.path.join(args.videos, name)
            for start in range(0, count_frames(path) - args.frames + 1, args.frames):
                windows.append(read_video(path, args.frames, start=start, resolution=args.size))
        np.save(windows_path, np.stack(windows))
        log(f"{len(windows)} training windows -> {windows_path}")
    if not os.path.isfile(heldout_path):
        clips = [
            read_video(os.path.join(args.videos, n), args.frames, start=s, resolution=args.size)
            for n, s in HELDOUT
        ]
        np.save(heldout_path, np.stack(clips))
    return windows_path, heldout_path


def run_worker(python: str, kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [python, WORKERS, kind, json.dumps(spec)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=timeout)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"{kind} worker failed (exit {p.returncode}); its stderr is above")


def _rel(ours: float, ref: float) -> float | None:
    return abs(ours - ref) / abs(ref) if ref else None


def _stats(values: list[float]) -> dict[str, float]:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], np.float64)
    return {"median": float(np.median(v)), "max": float(np.max(v)), "n": int(v.size)}


def summarise(args, spec, sides, heldout_path) -> dict[str, Any]:
    """Per-step relative differences, held-out PSNR of both, warm step times, the targets."""
    import numpy as np

    from wfvae_jax.metrics.psnr import psnr

    ref, ours = sides["reference"]["steps"], sides["ours"]["steps"]
    if [r["kind"] for r in ref] != [o["kind"] for o in ours]:
        raise RuntimeError("the two sides alternated G and D differently")
    diffs = {}
    for key in GEN_KEYS + DISC_KEYS:
        pairs = [(o[key], r[key]) for o, r in zip(ours, ref, strict=True) if key in r]
        if key.startswith("logits"):  # means of O(1) logits: absolute
            diffs[key] = _stats([abs(o - r) for o, r in pairs])
        else:
            diffs[key] = _stats([_rel(o, r) for o, r in pairs])
    heldout = np.load(heldout_path)
    evals = []
    for step in sides["ours"]["eval_points"]:
        row = {"step": step}
        recon = {}
        for side in ("reference", "ours"):
            path = os.path.join(args.workdir, f"recon_{side}", f"step{step:05d}.npy")
            recon[side] = np.load(path)
            row[f"psnr_{side}"] = float(np.mean(np.asarray(psnr(heldout, recon[side]))))
        row["psnr_ours_vs_reference"] = float(
            np.mean(np.asarray(psnr(recon["reference"], recon["ours"])))
        )
        evals.append(row)
    times = {}
    for side in sides:
        rows = sides[side]["steps"]
        for kind in ("G", "D"):
            t = [r["time_s"] for r in rows if r["kind"] == kind][args.skip :]
            times[f"{side}_{kind}"] = float(np.median(t))
            times[f"{side}_{kind}_first"] = next(r["time_s"] for r in rows if r["kind"] == kind)
    pair = {s: times[f"{s}_G"] + times[f"{s}_D"] for s in sides}
    last = evals[-1]
    summary = {
        "median_total_loss_rel_diff": diffs["total_loss"]["median"],
        "max_total_loss_rel_diff": diffs["total_loss"]["max"],
        "median_disc_loss_rel_diff": diffs["disc_loss"]["median"],
        "final_psnr_reference": last["psnr_reference"],
        "final_psnr_ours": last["psnr_ours"],
        "final_psnr_diff_db": last["psnr_ours"] - last["psnr_reference"],
        "speed_ratio_G": times["reference_G"] / times["ours_G"],
        "speed_ratio_D": times["reference_D"] / times["ours_D"],
        "speed_ratio_GD": pair["reference"] / pair["ours"],
    }
    summary["targets"] = {
        "median loss difference <= 1%": summary["median_total_loss_rel_diff"] <= 0.01,
        "final held-out PSNR within 0.3 dB": abs(summary["final_psnr_diff_db"]) <= 0.3,
        "ours >= 1.0x the reference's speed": summary["speed_ratio_GD"] >= 1.0,
    }
    settings = {k: v for k, v in spec.items() if k not in ("config", "reference")}
    settings.update(model=args.model, skip=args.skip, videos=TRAIN_VIDEOS, heldout=HELDOUT)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "settings": settings,
        "summary": summary,
        "differences": diffs,
        "times_s": times,
        "evaluations": evals,
        "versions": {
            s: {k: v for k, v in sides[s].items() if k in ("torch", "jax", "torch_threads")}
            for s in sides
        },
        "steps": {side: sides[side]["steps"] for side in sides},
    }


def print_table(result: dict[str, Any]) -> None:
    s, t = result["summary"], result["times_s"]
    print(f"\n## Training side by side ({result['date']}, {result['settings']['steps']} steps)\n")
    print("| quantity | reference | ours | difference / ratio |")
    print("|---|---|---|---|")
    for key, d in result["differences"].items():
        kind = "absolute" if key.startswith("logits") else "relative"
        print(f"| {key}, per step | | | median {d['median']:.2e}, max {d['max']:.2e} {kind} |")
    for e in result["evaluations"]:
        print(
            f"| held-out PSNR after step {e['step']} | {e['psnr_reference']:.3f} dB | "
            f"{e['psnr_ours']:.3f} dB | {e['psnr_ours'] - e['psnr_reference']:+.3f} dB "
            f"(ours vs reference reconstruction {e['psnr_ours_vs_reference']:.1f} dB) |"
        )
    for kind, name in (("G", "generator"), ("D", "discriminator")):
        print(
            f"| warm {name} step | {t[f'reference_{kind}'] * 1e3:.0f} ms | "
            f"{t[f'ours_{kind}'] * 1e3:.0f} ms | ours {s[f'speed_ratio_{kind}']:.2f}x |"
        )
    print(f"| warm G+D pair | | | ours {s['speed_ratio_GD']:.2f}x |")
    print()
    for target, met in s["targets"].items():
        print(f"- {target}: {'met' if met else 'NOT met'}")


def plot(result: dict[str, Any], path: str) -> None:
    """Loss curves of both sides, their per-step relative difference, held-out PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    colors = {"reference": "tab:blue", "ours": "tab:orange"}
    styles = {"reference": "-", "ours": "--"}
    for side in ("reference", "ours"):
        rows = steps[side]
        for ax, kind, key in ((axes[0, 0], "G", "total_loss"), (axes[0, 1], "D", "disc_loss")):
            xs = [i for i, r in enumerate(rows) if r["kind"] == kind]
            ax.plot(
                xs, [rows[i][key] for i in xs], styles[side], color=colors[side], lw=1, label=side
            )
        ev = result["evaluations"]
        axes[1, 1].plot(
            [e["step"] for e in ev], [e[f"psnr_{side}"] for e in ev], "o" + styles[side],
            color=colors[side], label=side,
        )  # fmt: skip
    ref, ours = steps["reference"], steps["ours"]
    for key, kind in (("total_loss", "G"), ("disc_loss", "D")):
        xs = [i for i, r in enumerate(ref) if r["kind"] == kind]
        rel = [abs(ours[i][key] - ref[i][key]) / abs(ref[i][key]) for i in xs]
        axes[1, 0].semilogy(xs, rel, ".", ms=3, label=f"{key} ({kind} steps)")
    axes[1, 0].axhline(0.01, color="gray", lw=0.8, ls=":", label="1%")
    titles = (
        ("generator total loss", "step", "loss"),
        ("discriminator hinge loss", "step", "loss"),
        ("|ours - reference| / reference", "step", "relative difference"),
        ("held-out PSNR (posterior mode)", "step", "dB"),
    )
    for ax, (title, xl, yl) in zip(axes.flat, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    st = result["settings"]
    fig.suptitle(
        f"WF-VAE {st['model']} from scratch, wfvae_jax vs PyTorch reference: same weights, "
        f"batches and draws ({st['batch']}x{st['frames']}x{st['size']}², lr {st['lr']:g}, GAN on)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        print_table(result)
        plot(result, args.png)
        return
    from wfvae_jax.core.config import get_config
    from wfvae_jax.metrics import lpips

    os.makedirs(args.workdir, exist_ok=True)
    windows, heldout = prepare_data(args)
    spec = dict(
        steps=args.steps,
        batch=args.batch,
        frames=args.frames,
        size=args.size,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.eval_every,
        threads=args.threads,
        workdir=os.path.abspath(args.workdir),
        config=get_config(args.model).to_dict(),
        disc_ndf=args.disc_ndf,
        disc_num_layers=4,
        windows=windows,
        heldout=heldout,
        init_gen=os.path.join(args.workdir, "init_gen.safetensors"),
        init_disc=os.path.join(args.workdir, "init_disc.safetensors"),
        lpips_heads=os.path.join(lpips.WEIGHTS_DIR, "lpips_v0.1_vgg_linear_heads.safetensors"),
        reference=os.path.abspath(args.reference),
    )
    sides: dict[str, Any] = {}
    todo = []
    for side, python in (("reference", args.torch_python), ("ours", sys.executable)):
        saved = os.path.join(args.workdir, f"{side}.json")
        side_spec = dict(spec, side=side, recon_dir=os.path.join(args.workdir, f"recon_{side}"))
        if args.reuse and os.path.isfile(saved):
            with open(saved) as f:
                sides[side] = json.load(f)
            if sides[side]["spec"] != side_spec:
                raise RuntimeError(f"{saved} was run with other settings; drop --reuse")
            log(f"{side}: reusing {saved}")
            continue
        todo.append((side, python, side_spec, saved))
    if any(side == "reference" for side, *_ in todo):
        for path in (spec["init_gen"], spec["init_disc"]):  # the reference worker rewrites them
            if os.path.exists(path):
                os.remove(path)

    def run_side(side, python, side_spec, saved):
        log(f"{side}: {args.steps} steps ...")
        sides[side] = dict(run_worker(python, side, side_spec, args.timeout), spec=side_spec)
        with open(saved, "w") as f:
            json.dump(sides[side], f)

    if args.parallel and len(todo) == 2:
        # Ours starts once the reference worker has written the initial weights.
        ref = threading.Thread(target=run_side, args=todo[0])
        ref.start()
        while not all(os.path.exists(p) for p in (spec["init_gen"], spec["init_disc"])):
            if not ref.is_alive():
                raise RuntimeError("the reference worker stopped before writing the weights")
            time.sleep(2)
        run_side(*todo[1])
        ref.join()
        if "reference" not in sides:
            raise RuntimeError("the reference worker failed; its stderr is above")
    else:
        for item in todo:
            run_side(*item)
    if sides["reference"]["draw_checksums"] != sides["ours"]["draw_checksums"]:
        raise RuntimeError("the two workers drew different noise (NumPy versions differ?)")
    result = summarise(args, spec, sides, heldout)
    result["machine"] = dict(
        platform=platform.platform(), cpus=os.cpu_count(), load_avg=os.getloadavg()
    )
    result["git_head"] = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print_table(result)
    plot(result, args.png)
    log(f"wrote {args.out} and {args.png}")


if __name__ == "__main__":
    main()
