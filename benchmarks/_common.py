"""Shared helpers of the benchmark scripts: memory probes, timing, child processes, tables.

Every measured configuration runs in fresh child processes, so a peak belongs to that
configuration alone: :func:`run_child` starts ``python SCRIPT --child JSON`` and reads back the
one tagged JSON line the child prints with :func:`emit_result`. Peak memory on CPU is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water mark in KiB on Linux) minus a
baseline taken after imports, weights and inputs; on GPU it is
``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` minus ``bytes_in_use`` at the baseline
(:class:`MemoryProbe`). The encode/decode measurement itself is ``_measure.py``.
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


# ----------------------------------------------------------------------------- timing


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
