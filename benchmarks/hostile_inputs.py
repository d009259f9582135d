"""Hostile and careless inputs as command lines: exit code, seconds and peak RSS of each.

Builds the cases in a temporary folder (forged checkpoints, hostile configs, oversized or
size-changing videos, playlists, concat lists, forged manifests, symlink escapes, FIFOs, two
writers on one folder), then runs each as its own command under ``ulimit -v`` (8,000,000 KiB by
default) and a time limit, and prints a table plus JSON. ``--repo`` runs the commands against
another checkout (e.g. a ``git worktree`` of an older branch) to compare before and after::

    python benchmarks/hostile_inputs.py --json after.json
    git worktree add /tmp/before layout
    python benchmarks/hostile_inputs.py --repo /tmp/before --json before.json

Each command runs in its own process group; ``seconds`` is wall time, ``peak_rss_mb`` the
process's ``ru_maxrss`` (``os.wait4``; Linux carries the parent's peak over ``fork``, so the
cases are built in a child and this process stays small: ~20 MB is the floor). ``timeout`` means
killed at ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(HERE, "tests", "data", "wfvae_tiny")
VIDEOS = os.path.join(HERE, "tests", "data", "videos")
VIDEO = os.path.join(VIDEOS, "bikes_0000.mp4")


def _write_video(path: str, frames: list, codec: str = "libx264") -> None:
    import av

    with av.open(path, "w") as out:
        s = out.add_stream(codec, rate=25)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p" if codec == "libx264" else "yuvj420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _size_changing_video(path: str) -> None:
    import av
    import numpy as np

    with av.open(path, "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuvj420p"
        other = av.CodecContext.create("mjpeg", "w")
        other.width, other.height, other.pix_fmt = 64, 48, "yuvj420p"
        other.time_base = fractions.Fraction(1, 25)
        for i, (ctx, h, w) in enumerate([(s, 96, 128)] * 5 + [(other, 48, 64)] * 8):
            rgb = np.full((h, w, 3), 20 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
            for p in ctx.encode(frame):
                p.stream = s
                out.mux(p)


def _forged_weights(path: str, n: int) -> None:
    """The tiny weights claiming ``n + 2`` encoder resblocks per level: empty forged arrays, the
    level-1 downsampler renumbered after them, so the names are consistent."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    sd = load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors"))
    empty = np.zeros((0,), np.float32)
    for i in range(3, 3 + n):
        sd[f"encoder.down1.{i}.conv1.weight"] = empty
        sd[f"encoder.down2.{i}.conv1.conv.weight"] = empty
    for leaf in ("weight", "bias"):
        sd[f"encoder.down1.{n + 3}.conv.{leaf}"] = sd.pop(f"encoder.down1.3.conv.{leaf}")
    os.makedirs(path)
    save_file(sd, os.path.join(path, "diffusion_pytorch_model.safetensors"))


def _export(path: str, **config) -> str:
    shutil.copytree(BASE_EXPORT, path)
    if config:
        cfg_file = os.path.join(path, "config.json")
        with open(cfg_file) as f:
            cfg = json.load(f)
        cfg.update(config)
        with open(cfg_file, "w") as f:
            json.dump(cfg, f)  # NaN written as a forger would
    return path


BASE_EXPORT = ""


def build_cases(d: str) -> list[dict]:
    """The cases: ``{"case", "class", "argv" (after ``python -m wfvae_jax``) or "python"}``."""
    global BASE_EXPORT
    sys.path.insert(0, HERE)
    import numpy as np

    import wfvae_jax
    from wfvae_jax.data import latents as fmt
    from wfvae_jax.io.convert import load_reference

    BASE_EXPORT = os.path.join(d, "tiny_export")
    wfvae_jax.save_pretrained(BASE_EXPORT, *load_reference(TINY))
    j = os.path.join
    recon = ["reconstruct", "--output", j(d, "o.mp4"), "--num_frames", "5"]
    cases = []

    def add(case, cls, argv=None, python=None):
        cases.append({"case": case, "class": cls, "argv": argv, "python": python})

    # Unbounded work from a small file.
    for n in (2000, 50000):
        _forged_weights(j(d, f"forged_{n}"), n)
        add(
            f"forged checkpoint, {n} resblock keys",
            "forged structure",
            ["convert", j(d, f"forged_{n}"), j(d, f"conv_{n}")],
        )
    for field, value in (("encoder_num_resblocks", 100000), ("connect_res_layer_num", 10**6)):
        ex = _export(j(d, f"export_{field}"), **{field: value})
        add(
            f"export config {field}={value}",
            "hostile config",
            [*recon, "--checkpoint", ex, "--input", VIDEO, "--resolution", "32"],
        )
    for label, value in (("'16'", "16"), ("null", None), ("[16]", [16]), ("16.0", 16.0)):
        ex = _export(j(d, f"export_type_{len(cases)}"), base_channels=value)
        add(
            f"config base_channels={label}",
            "hostile config",
            [*recon, "--checkpoint", ex, "--input", VIDEO, "--resolution", "32"],
        )
    cfg = json.load(open(j(BASE_EXPORT, "config.json")))
    ex = _export(j(d, "export_nan"), scale=[float("nan")] * len(cfg["scale"]))
    add(
        "config scale=NaN, encode-dataset",
        "hostile config",
        [
            "encode-dataset",
            "--checkpoint",
            ex,
            "--videos",
            VIDEOS,
            "--out",
            j(d, "nan_out"),
            "--num_frames",
            "5",
            "--resolution",
            "32",
            "--worker_count",
            "0",
            "--no_progress",
        ],
    )
    thin = j(d, "thin_16x4096.mp4")
    _write_video(thin, [np.full((16, 4096, 3), 90, np.uint8)] * 9)
    add(
        "thin 16x4096 video, --crop none",
        "oversized frames",
        [
            "reconstruct",
            "--checkpoint",
            BASE_EXPORT,
            "--input",
            thin,
            "--output",
            j(d, "t.mp4"),
            "--num_frames",
            "9",
            "--crop",
            "none",
        ],
    )
    big = j(d, "big_8192.mkv")
    _write_video(big, [np.zeros((8192, 8192, 3), np.uint8)] * 9, codec="mjpeg")
    add(
        "8192x8192 video, --resolution native",
        "oversized frames",
        [
            "reconstruct",
            "--checkpoint",
            BASE_EXPORT,
            "--input",
            big,
            "--output",
            j(d, "b.mp4"),
            "--num_frames",
            "9",
            "--resolution",
            "native",
        ],
    )
    sizes = j(d, "sizes.mkv")
    _size_changing_video(sizes)
    add(
        "frames change size midway",
        "oversized frames",
        [*recon[:-1], "9", "--checkpoint", BASE_EXPORT, "--input", sizes, "--resolution", "32"],
    )

    # Reads outside what the user named.
    os.makedirs(j(d, "elsewhere"))
    secret = j(d, "elsewhere", "secret.mp4")
    shutil.copy(VIDEO, secret)
    m3u8 = j(d, "list.m3u8")
    with open(m3u8, "w") as f:
        f.write(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n")
    concat = j(d, "concat.mp4")
    with open(concat, "w") as f:
        f.write(f"ffconcat version 1.0\nfile '{secret}'\n")
    for label, path in (("HLS playlist (.m3u8)", m3u8), ("ffconcat list named .mp4", concat)):
        add(
            f"{label} as --input",
            "playlist/concat",
            [*recon, "--checkpoint", BASE_EXPORT, "--input", path, "--resolution", "32"],
        )
    fifo = j(d, "fifo.mp4")
    os.mkfifo(fifo)
    add(
        "FIFO as --input",
        "FIFO",
        [*recon, "--checkpoint", BASE_EXPORT, "--input", fifo, "--resolution", "32"],
    )
    loop = j(d, "loop.mp4")
    os.symlink(loop, loop)
    add(
        "symlink loop as --input",
        "FIFO",
        [*recon, "--checkpoint", BASE_EXPORT, "--input", loop, "--resolution", "32"],
    )
    ex = _export(j(d, "export_link"))
    npy = j(ex, "params", "decoder", "conv_in", "conv", "kernel.npy")
    os.replace(npy, j(d, "elsewhere", "kernel.npy"))
    os.symlink(j(d, "elsewhere", "kernel.npy"), npy)
    add(
        "export .npy symlinked out of the folder",
        "symlink escape",
        [*recon, "--checkpoint", ex, "--input", VIDEO, "--resolution", "32"],
    )
    ex = _export(j(d, "export_empty_npy"))
    open(j(ex, "params", "decoder", "conv_in", "conv", "kernel.npy"), "w").close()
    add(
        "export .npy of 0 bytes",
        "symlink escape",
        [*recon, "--checkpoint", ex, "--input", VIDEO, "--resolution", "32"],
    )

    # Latent datasets: one real encoding, then forged copies of it.
    real = j(d, "latents")
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "wfvae_jax",
            "encode-dataset",
            "--checkpoint",
            BASE_EXPORT,
            "--videos",
            VIDEOS,
            "--out",
            real,
            "--num_frames",
            "5",
            "--resolution",
            "32",
            "--videos_per_shard",
            "2",
            "--worker_count",
            "0",
            "--no_progress",
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if code.returncode:
        raise SystemExit(f"could not encode the fixture dataset:\n{code.stderr}")
    read = "from wfvae_jax.data import LatentSource; s = LatentSource({!r}); " + (
        "print(len(s), [s[i]['video'] for i in range(len(s))])"
    )

    def forged(name, edit):
        out = j(d, name)
        shutil.copytree(real, out)
        manifest = fmt.read_manifest(out)
        edit(out, manifest)
        fmt.write_manifest(out, manifest)
        return out

    def traversal(out, m):
        m["shards"][1]["file"] = "../latents/latents-00000.array_record"

    def absolute(out, m):
        m["shards"][1]["file"] = "/etc/passwd"

    def duplicate(out, m):
        m["shards"][1] = dict(m["shards"][0])

    def escape(out, m):
        shard = j(out, m["shards"][1]["file"])
        os.remove(shard)
        os.symlink(j(real, m["shards"][0]["file"]), shard)

    def fifo_shard(out, m):
        shard = j(out, m["shards"][1]["file"])
        os.remove(shard)
        os.mkfifo(shard)

    def wrong_shape(out, m):
        m["latent_shape"] = [2, 8, 8, 8]

    for label, edit, cls in (
        ("manifest shard ../other/...", traversal, "manifest traversal"),
        ("manifest shard /etc/passwd", absolute, "manifest traversal"),
        ("manifest lists a shard twice", duplicate, "manifest duplicates"),
        ("shard symlinked to another dataset", escape, "symlink escape"),
        ("FIFO as a shard", fifo_shard, "FIFO"),
        ("records of another latent_shape", wrong_shape, "manifest traversal"),
    ):
        add(label, cls, python=read.format(forged(f"forged_{edit.__name__}", edit)))

    # Two writers on one folder: B starts 2 s after A (both --overwrite).
    user_tmp = j(d, "two", "notes.tmp")
    os.makedirs(os.path.dirname(user_tmp))
    open(user_tmp, "w").write("mine")
    writer = [
        "encode-dataset",
        "--checkpoint",
        BASE_EXPORT,
        "--videos",
        VIDEOS,
        "--out",
        j(d, "two"),
        "--num_frames",
        "5",
        "--clips_per_video",
        "3",
        "--videos_per_shard",
        "1",
        "--worker_count",
        "0",
        "--no_progress",
        "--overwrite",
    ]
    cases.append(
        {
            "case": "two encode-dataset --overwrite on one --out",
            "class": "concurrent writers",
            "pair": [[*writer, "--resolution", "32"], [*writer, "--resolution", "64"]],
            "user_tmp": user_tmp,
        }
    )
    return cases


def _run(cmd: list[str], repo: str, timeout: float, vmem_kb: int, delay: float = 0.0):
    env = {**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"}
    shell = f"ulimit -v {vmem_kb}; exec " + " ".join(_quote(c) for c in cmd)
    time.sleep(delay)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["bash", "-c", shell],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return proc, t0


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _wait(proc, t0: float, timeout: float) -> dict:
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    first_error = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "")
    return {
        "exit": "timeout" if timed_out else proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "message": first_error[:150],
        "error_line": any(ln.startswith("error:") for ln in lines),
        "hint_line": any(ln.startswith("hint:") for ln in lines),
        "traceback": "Traceback" in err,
    }


def run_case(case: dict, repo: str, timeout: float, vmem_kb: int) -> dict:
    prefix = [sys.executable]
    if "pair" in case:
        a = _run([*prefix, "-m", "wfvae_jax", *case["pair"][0]], repo, timeout, vmem_kb)
        b = _run([*prefix, "-m", "wfvae_jax", *case["pair"][1]], repo, timeout, vmem_kb, 2.0)
        ra, rb = _wait(*a, timeout), _wait(*b, timeout)
        kept = os.path.exists(case["user_tmp"])
        return {
            **rb,
            "exit": f"{ra['exit']}/{rb['exit']}",
            "user_tmp_kept": kept,
            "message": rb["message"] or ra["message"],
        }
    cmd = (
        [*prefix, "-c", case["python"]]
        if case["python"]
        else [*prefix, "-m", "wfvae_jax", *case["argv"]]
    )
    return _wait(*_run(cmd, repo, timeout, vmem_kb), timeout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", default=HERE, help="checkout whose wfvae_jax the commands run")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per command")
    p.add_argument("--vmem_kb", type=int, default=8_000_000, help="ulimit -v for each command")
    p.add_argument("--only", default=None, help="run the cases whose name contains this")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--build", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build:  # in a child, so that this process stays small (see _run)
        with open(os.path.join(args.build, "cases.json"), "w") as f:
            json.dump(build_cases(args.build), f)
        return
    repo = os.path.abspath(args.repo)
    with tempfile.TemporaryDirectory(prefix="hostile_") as d:
        subprocess.run([sys.executable, __file__, "--build", d], check=True)
        with open(os.path.join(d, "cases.json")) as f:
            cases = json.load(f)
        rows = []
        for case in cases:
            if args.only and args.only not in case["case"]:
                continue
            r = {"case": case["case"], "class": case["class"]}
            r.update(run_case(case, repo, args.timeout, args.vmem_kb))
            rows.append(r)
            print(
                f"{r['case'][:44]:44s} {r['exit']!s:>8s} {r['seconds']:7.1f}s "
                f"{r['peak_rss_mb']:6d} MB  {r['message'][:70]}",
                flush=True,
            )
    head = f"{'case':44s} {'exit':>8s} {'seconds':>8s} {'peak RSS':>9s}  first error line"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['case'][:44]:44s} {r['exit']!s:>8s} {r['seconds']:7.1f}s "
            f"{r['peak_rss_mb']:6d} MB  {r['message'][:70]}"
        )
    result = {
        "repo": repo,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "timeout_s": args.timeout,
        "ulimit_v_kb": args.vmem_kb,
        "cases": rows,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
