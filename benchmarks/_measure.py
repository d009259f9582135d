"""One ``encode`` / ``decode`` configuration measured in a compile child and a run child.

A configuration is measured in two fresh child processes that share a persistent XLA
compilation cache (a fresh temporary directory per benchmark run):

1. the *compile* child lowers and compiles the jitted function (``jit(...).lower().compile()``)
   and writes the executable to the cache; it reports compile time and the peak memory of
   compiling;
2. the *run* child gets the executable from the cache (no compile), then times the first call and
   the warm calls; its peak memory is that of execution alone.

"First call" time is compile time + the run child's first call, i.e. what a fresh process without
a cache pays. Also here: the random weights and inputs (built leaf by leaf and handed to JAX
without a second host copy) and the argument checks the scripts share.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import _common as C

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
    return {n: getattr(ma, k) / C.MIB for n, k in zip(names, keys, strict=True) if hasattr(ma, k)}


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
    x = C.block(x)
    probe = C.MemoryProbe()
    probe.set_baseline()
    out: dict[str, Any] = {"spec": spec, "input_shape": list(x.shape), **C.backend_info()}
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
        t1, c1 = time.perf_counter(), C.process_cpu_s()
        compiled = lowered.compile()
        t2, c2 = time.perf_counter(), C.process_cpu_s()
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

    first, first_cpu = C.time_call(call)
    warm, warm_cpu = C.warm_times(call, spec["warm_runs"], spec["warm_budget_s"])
    y = last[0]
    out.update(
        first_s=first,
        first_cpu_s=first_cpu,
        warm_s=warm,
        warm_median_s=C.median(warm),
        warm_cpu_s=warm_cpu,
        warm_cpu_median_s=C.median(warm_cpu),
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
    comp = C.run_child(script, {**spec, "phase": "compile"}, timeout_s, env)
    if "error" in comp:
        return {"error": "compile: " + comp["error"], "spec": spec}
    run = C.run_child(script, {**spec, "phase": "run"}, timeout_s, env)
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
        C.emit_result(measure(json.loads(argv[1])))
        return True
    return False
