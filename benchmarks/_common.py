"""Shared helpers for the benchmark scripts: subprocess runner, memory probes, tables.

Every measured configuration runs in fresh child processes so that peak memory belongs to that
configuration alone. A configuration is measured in two children that share a persistent XLA
compilation cache (a fresh temporary directory per benchmark run):

1. the *compile* child lowers and compiles the jitted function (``jit(...).lower().compile()``)
   and writes the executable to the cache; it reports compile time and the peak memory of
   compiling;
2. the *run* child gets the executable from the cache (no compile), then times the first call and
   the warm calls; its peak memory is that of execution alone.

"First call" time is compile time + the run child's first call, i.e. what a fresh process without
a cache pays. Peak memory on CPU is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water
mark in KiB on Linux) minus a baseline taken after imports, weights and inputs; on GPU it is
``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` minus ``bytes_in_use`` at the baseline.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

RESULT_TAG = "@@BENCH_RESULT@@ "
MIB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------- memory probes


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / MIB


def current_rss_mib() -> float:
    """This process's current resident set size in MiB (from ``/proc/self/statm``)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:
        return float("nan")


def device_memory_stats() -> dict[str, int] | None:
    """``memory_stats()`` of the first JAX device, or None where the backend has none (CPU)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    return stats if stats and "peak_bytes_in_use" in stats else None


class MemoryProbe:
    """Peak memory since process start, relative to a baseline set by :meth:`set_baseline`.

    ``kind`` is ``"device"`` (accelerator bytes from ``memory_stats``) or ``"rss"`` (host RSS).
    Host RSS is always recorded as well.
    """

    def __init__(self) -> None:
        self.kind = "device" if device_memory_stats() is not None else "rss"
        self.baseline_mib = 0.0
        self.baseline_rss_mib = 0.0
        self.baseline_current_rss_mib = 0.0

    def _device_now(self, key: str) -> float:
        stats = device_memory_stats()
        return stats[key] / MIB if stats else float("nan")

    def set_baseline(self) -> None:
        self.baseline_rss_mib = peak_rss_mib()
        self.baseline_current_rss_mib = current_rss_mib()
        self.baseline_mib = (
            self._device_now("bytes_in_use") if self.kind == "device" else self.baseline_rss_mib
        )

    def peak_mib(self) -> float:
        """Absolute peak (device bytes or RSS) in MiB."""
        return self._device_now("peak_bytes_in_use") if self.kind == "device" else peak_rss_mib()

    def report(self) -> dict[str, Any]:
        peak = self.peak_mib()
        return {
            "mem_kind": self.kind,
            "baseline_mib": self.baseline_mib,
            "peak_mib": peak,
            "peak_minus_baseline_mib": peak - self.baseline_mib,
            "rss_baseline_mib": self.baseline_rss_mib,
            "rss_peak_mib": peak_rss_mib(),
            # High-water mark minus current RSS at the baseline: memory an execution peak could
            # hide under (should be small; weights are built leaf by leaf for that reason).
            "rss_baseline_gap_mib": self.baseline_rss_mib - self.baseline_current_rss_mib,
        }


# ----------------------------------------------------------------------------- arguments


def check_frames(parser: Any, models: Sequence[str], frames: Sequence[int]) -> None:
    """``parser.error`` unless every T is a valid frame count of every model (the config's
    rule, ``WFVAEConfig.check_num_frames``: ``1 + d k``, ``d = temporal_downsample``)."""
    from wfvae_jax.core.config import get_config

    for name in models:
        try:
            cfg = get_config(name)
            for t in frames:
                cfg.check_num_frames(t)
        except ValueError as e:
            parser.error(f"{name}: {e}")


def check_enc_chunk(parser: Any, models: Sequence[str], t_chunk: int) -> None:
    """``parser.error`` unless ``t_chunk`` (video frames) is a positive multiple of every model's
    ``temporal_downsample``."""
    from wfvae_jax.core.config import get_config

    for name in models:
        d = get_config(name).temporal_downsample
        if t_chunk < d or t_chunk % d:
            parser.error(f"--enc-chunk must be a positive multiple of {d} for {name}")


def api_t_chunk(t_chunk: int | None) -> int | None:
    """A spec's ``t_chunk`` (None = direct) as the measured ``wfvae_jax`` takes it: ``0`` forces
    direct where ``None`` means the automatic chunk (``api.auto_t_chunk``); older trees (measured
    with ``--package-dir``) have no auto chunk and take ``None``."""
    import wfvae_jax.inference.api

    if t_chunk is None and hasattr(wfvae_jax.inference.api, "auto_t_chunk"):
        return 0
    return t_chunk


# ----------------------------------------------------------------------------- JAX setup


def enable_compilation_cache(cache_dir: str) -> None:
    """Points JAX's persistent compilation cache at ``cache_dir`` and caches every executable."""
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class CacheHitCounter:
    """Counts persistent-cache hits (``/jax/compilation_cache/cache_hits`` events)."""

    def __init__(self) -> None:
        import jax

        self.hits = 0

        def listener(event: str, **kwargs: Any) -> None:
            if event == "/jax/compilation_cache/cache_hits":
                self.hits += 1

        jax.monitoring.register_event_listener(listener)


def random_params(config: Any, seed: int = 0, part: str | None = None) -> Any:
    """Random WF-VAE parameters without running ``init`` (cheap in time and memory).

    ``part``: ``None`` (both halves), ``"encoder"`` or ``"decoder"`` (only that subtree, as
    ``wfvae_jax.load_pretrained(path, part=...)`` loads it: a one-op benchmark holds no unused
    weights).

    Shapes come from ``wfvae_jax.io.checkpoint.param_template``; conv kernels and biases are
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` like PyTorch's default init, norm scales 1 and
    norm biases 0, so activations stay in a realistic range (no overflow or denormals).
    """
    import numpy as np

    from wfvae_jax.io.checkpoint import param_template

    shapes = param_template(config)
    if part is not None:
        shapes = {part: shapes[part]}
    rng = np.random.default_rng(seed)

    def fill(tree: Any) -> Any:
        if not isinstance(tree, dict):
            raise TypeError(f"unexpected params node {type(tree)}")
        out = {}
        kernel = tree.get("kernel")
        bound = 1.0 / math.sqrt(math.prod(kernel.shape[:-1])) if kernel is not None else None
        for name, leaf in tree.items():
            if isinstance(leaf, dict):
                out[name] = fill(leaf)
            else:
                a = aligned_empty(leaf.shape)
                if bound is not None:
                    rng.random(dtype=np.float32, out=a)  # in place: no float64 temporary
                    a *= 2.0 * bound
                    a -= bound
                else:
                    a[...] = 1.0 if name == "scale" else 0.0
                out[name] = put(a)
        return out

    # Leaf by leaf (and zero-copy on CPU), so host copies never coexist with the whole device
    # tree: the RSS high-water mark at the baseline then stays close to the current RSS.
    put = to_device
    return fill(shapes)


def to_device(a: Any) -> Any:
    """A numpy array as a JAX array without a second host copy: zero-copy DLPack on CPU."""
    import jax
    import jax.numpy as jnp

    if jax.default_backend() == "cpu":
        try:
            return jnp.from_dlpack(a)
        except Exception:  # noqa: BLE001 - e.g. unaligned buffers; fall back to a copy
            pass
    return jax.block_until_ready(jax.device_put(a))


def aligned_empty(shape: Sequence[int], dtype: Any = "float32", align: int = 64) -> Any:
    """``np.empty`` aligned to ``align`` bytes: XLA:CPU copies DLPack buffers that are not
    (numpy's large allocations are only 16-byte aligned), which would double the input."""
    import numpy as np

    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + n].view(dtype).reshape(tuple(shape))


def random_video(shape: Sequence[int], seed: int = 0) -> Any:
    """Uniform [-1, 1] float32 video ``(B, T, H, W, 3)`` on the device, built frame by frame."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = aligned_empty(shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            x[i, j] = rng.uniform(-1.0, 1.0, shape[2:])
    return to_device(x)


def backend_info() -> dict[str, Any]:
    """Backend, device kind, versions and host CPU count, for the JSON output."""
    import jax

    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
    }


def block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


def process_cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def time_call(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()`` including ``block_until_ready``.

    CPU seconds are less sensitive than wall time to other processes sharing the cores.
    """
    c0, t0 = process_cpu_s(), time.perf_counter()
    block(fn())
    return time.perf_counter() - t0, process_cpu_s() - c0


def warm_times(fn: Callable[[], Any], n: int, budget_s: float) -> tuple[list[float], list[float]]:
    """Up to ``n`` warm runs' (wall, CPU) seconds; stops early once ``budget_s`` wall is spent."""
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < max(n, 1):
        wall, cpu = time_call(fn)
        walls.append(wall)
        cpus.append(cpu)
        if sum(walls) >= budget_s:
            break
    return walls, cpus


# ----------------------------------------------------------------------------- subprocesses


def emit_result(result: dict[str, Any]) -> None:
    """Prints a child's result as one tagged JSON line on stdout (read by :func:`run_child`)."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(
    script: str, spec: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Runs ``python script --child JSON`` in a fresh process and returns its tagged result.

    On a crash, a timeout or a missing result line, returns ``{"error": ...}`` with the tail of
    stderr, so one failed configuration does not end the sweep.
    """
    cmd = [sys.executable, script, "--child", json.dumps(spec)]
    child_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f} s", "wall_s": time.perf_counter() - t0}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG) :])
            out["child_wall_s"] = time.perf_counter() - t0
            return out
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"exit code {proc.returncode}: {tail}", "wall_s": time.perf_counter() - t0}


def log(msg: str) -> None:
    """Progress line on stderr with a timestamp (stdout is kept for the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def snapshot_package(
    dest_dir: str, src: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Copies the ``wfvae_jax`` sources into ``dest_dir`` for the children of one sweep.

    The package may be edited while a long sweep runs; children import the snapshot (it comes
    first on ``PYTHONPATH``) so every configuration of a sweep measures the same code.
    ``src`` (a ``wfvae_jax`` package directory) measures another tree, e.g. a patched copy.
    Returns the environment for :func:`run_child` and a description (git HEAD, a sha256 over
    the package's ``.py`` files, whether the tree had uncommitted changes).
    """
    import hashlib
    import shutil

    if src is None:
        import wfvae_jax

        src = os.path.dirname(os.path.abspath(wfvae_jax.__file__))
    src = os.path.abspath(src)
    shutil.copytree(
        src, os.path.join(dest_dir, "wfvae_jax"), ignore=shutil.ignore_patterns("__pycache__")
    )
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(src)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, src).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    repo = os.path.dirname(src)

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", "-C", repo, *cmd], capture_output=True, text=True)
        return out.stdout.strip()

    info = {
        "source": src,
        "sha256_py": digest.hexdigest()[:16],
        "git_head": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", src)),
        "snapshot_time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = os.pathsep.join(p for p in (dest_dir, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}, info


def code_line(info: dict[str, Any]) -> str:
    """One line naming the measured code version, for the tables."""
    dirty = " + uncommitted changes" if info.get("dirty") else ""
    where = (
        f"at git {info['git_head']}{dirty}"
        if info.get("git_head")
        else f"from {info.get('source', '?')}"
    )
    return (
        f"Code: wfvae_jax {where}, sources sha256 {info.get('sha256_py', '?')} "
        f"(snapshot {info.get('snapshot_time', '?')})."
    )


# ----------------------------------------------------------------------------- formatting


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: Any, digits: int = 2) -> str:
    """Number for a table cell: ``-`` for missing/NaN, fixed digits otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def ratio(a: Any, b: Any) -> float | None:
    if (
        a is None
        or b is None
        or not b
        or any(isinstance(v, float) and math.isnan(v) for v in (a, b))
    ):
        return None
    return a / b


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; numeric cells right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    align = []
    for j in range(len(headers)):
        numeric = all(
            isinstance(r[j], (int, float)) or r[j] is None for r in rows if j < len(r)
        ) and bool(rows)
        align.append("---:" if numeric else "---")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


# ----------------------------------------------------------------------------- the measurement


def _xla_memory(compiled: Any) -> dict[str, float]:
    """XLA's own buffer accounting of an executable (temp = live intermediates), in MiB."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {}
    if ma is None:
        return {}
    keys = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    names = ("xla_temp_mib", "xla_argument_mib", "xla_output_mib")
    return {n: getattr(ma, k) / MIB for n, k in zip(names, keys, strict=True) if hasattr(ma, k)}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Child-process worker: compiles (``phase="compile"``) or runs (``phase="run"``) one op.

    ``spec`` keys: ``op`` ("encode"/"decode"), ``model`` (config name), ``size`` (H = W),
    ``frames`` (video T = 1 + d k), ``t_chunk`` (None = direct; video frames for encode, latent
    frames for decode), ``dtype`` ("float32"/"bfloat16"), ``batch``, ``warm_runs``,
    ``warm_budget_s``, ``cache_dir``, ``seed``, ``precision`` (optional
    ``jax_default_matmul_precision``). Encode gets a uniform [-1, 1] video, decode a
    standard-normal latent of the matching shape; weights are :func:`random_params`, only
    the op's half (``wfvae_jax.io.checkpoint.OP_PART``).
    """
    import jax
    import numpy as np

    import wfvae_jax
    from wfvae_jax.io.checkpoint import OP_PART

    enable_compilation_cache(spec["cache_dir"])
    if spec.get("precision"):
        jax.config.update("jax_default_matmul_precision", spec["precision"])
    hits = CacheHitCounter()
    cfg = wfvae_jax.get_config(spec["model"])
    dtype = wfvae_jax.parse_dtype(spec["dtype"])
    op, tc = spec["op"], api_t_chunk(spec["t_chunk"])
    b, t, s = spec.get("batch", 1), spec["frames"], spec["size"]
    rng = np.random.default_rng(spec.get("seed", 0))
    params = random_params(cfg, spec.get("seed", 0), part=OP_PART[op])
    if op == "encode":
        x = random_video((b, t, s, s, 3), spec.get("seed", 0))
    else:
        z = aligned_empty((b, cfg.latent_frames(t), s // 8, s // 8, cfg.latent_dim))
        z[...] = rng.standard_normal(z.shape)
        x = to_device(z)
    x = block(x)
    probe = MemoryProbe()
    probe.set_baseline()
    out: dict[str, Any] = {"spec": spec, "input_shape": list(x.shape), **backend_info()}
    out["wfvae_jax_file"] = wfvae_jax.__file__

    if spec["phase"] == "compile":
        # The public AOT entry points lower exactly what encode/decode run.
        lower = (
            wfvae_jax.inference.api.lower_encode
            if op == "encode"
            else wfvae_jax.inference.api.lower_decode
        )
        t0 = time.perf_counter()
        lowered = lower(params, x, cfg, dtype=dtype, t_chunk=tc)
        t1, c1 = time.perf_counter(), process_cpu_s()
        compiled = lowered.compile()
        t2, c2 = time.perf_counter(), process_cpu_s()
        out.update(
            lower_s=t1 - t0,
            compile_s=t2 - t1,
            compile_cpu_s=c2 - c1,
            **_xla_memory(compiled),
            **probe.report(),
        )
        return out

    api_fn = wfvae_jax.encode if op == "encode" else wfvae_jax.decode

    last: list[Any] = [None]

    def call() -> Any:
        last[0] = None  # drop the previous output first so it does not add to the peak
        last[0] = api_fn(params, x, cfg, dtype=dtype, t_chunk=tc)
        return last[0]

    first, first_cpu = time_call(call)
    warm, warm_cpu = warm_times(call, spec["warm_runs"], spec["warm_budget_s"])
    y = last[0]
    out.update(
        first_s=first,
        first_cpu_s=first_cpu,
        warm_s=warm,
        warm_median_s=median(warm),
        warm_cpu_s=warm_cpu,
        warm_cpu_median_s=median(warm_cpu),
        cache_hits=hits.hits,
        output_shape=list((y.mean if op == "encode" else y).shape),
        output_finite=bool(np.isfinite(np.asarray(y.mean if op == "encode" else y)).all()),
        **probe.report(),
    )
    return out


def measure_config(
    script: str, spec: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Compile child then run child (see the module docstring); merged result dict.

    Keys: ``compile_s``, ``first_call_s`` (compile + first run), ``warm_median_s``, ``warm_s``,
    ``peak_mib``/``baseline_mib``/``peak_minus_baseline_mib`` (execution, run child),
    ``compile_peak_minus_baseline_mib``, XLA's ``xla_temp_mib`` etc., ``error`` on failure.
    """
    comp = run_child(script, {**spec, "phase": "compile"}, timeout_s, env)
    if "error" in comp:
        return {"error": "compile: " + comp["error"], "spec": spec}
    run = run_child(script, {**spec, "phase": "run"}, timeout_s, env)
    if "error" in run:
        return {"error": "run: " + run["error"], "spec": spec, "compile": comp}
    res = dict(run)
    res.update(
        compile_s=comp["compile_s"],
        compile_cpu_s=comp["compile_cpu_s"],
        lower_s=comp["lower_s"],
        first_call_s=comp["compile_s"] + run["first_s"],
        compile_peak_minus_baseline_mib=comp["peak_minus_baseline_mib"],
        compile_peak_mib=comp["peak_mib"],
        child_wall_s=comp.get("child_wall_s", 0.0) + run.get("child_wall_s", 0.0),
        **{k: v for k, v in comp.items() if k.startswith("xla_")},
    )
    if run.get("cache_hits", 0) < 1:
        res["warning"] = "persistent-cache miss: the run child compiled; its peak includes compile"
    return res


def child_main(argv: Sequence[str]) -> bool:
    """Handles ``--child JSON`` (returns True after emitting a result) for a benchmark script."""
    if len(argv) >= 2 and argv[0] == "--child":
        emit_result(measure(json.loads(argv[1])))
        return True
    return False
