"""The encode step on a device mesh and :func:`encode_dataset`, the whole run."""

from __future__ import annotations

import functools
import gc
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from wfvae_jax.core import compile_options
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.data import latents as fmt
from wfvae_jax.data.video_source import VideoSource
from wfvae_jax.encode_dataset.inputs import DecodeClips, decode_in_workers
from wfvae_jax.encode_dataset.manifest import final_manifest, new_manifest, prepare_output
from wfvae_jax.encode_dataset.spec import ClipSpec, EncodeOptions, check_clips, compute_dtype
from wfvae_jax.encode_dataset.writer import Batch, Loop, events
from wfvae_jax.inference.api import encode
from wfvae_jax.inference.multihost import sync_processes
from wfvae_jax.inference.sharding import (
    activation_sharding,
    axis_size,
    make_mesh,
    parse_mesh,
    replicate,
    replicated,
)
from wfvae_jax.io.folder_lock import holds_lock
from wfvae_jax.train.preemption import Preemption, resume_command

# SIGTERM/SIGINT: seconds from the signal to the exit at the latest (the batch in flight is written
# and the shards it completes committed first); platforms give ~30 s notice.
PREEMPTION_GRACE_S = 25.0


def run_mesh(spec: str | None) -> Mesh:
    """The run's mesh (``inference.sharding.make_mesh``) over every device of every process.

    ``spec`` is ``"data=D,space=S"`` (a missing axis is 1) or ``None`` (``data=`` all devices).
    Raises:
      ValueError: a malformed ``spec``, or ``D * S`` not the device count (a process whose
        devices are outside the mesh could not take part in the steps).
    """
    n = jax.device_count()
    sizes = parse_mesh(spec) if spec else {"data": n, "space": 1}
    if sizes["data"] * sizes["space"] != n:
        raise ValueError(
            f"--mesh {spec} uses {sizes['data'] * sizes['space']} devices but the run has {n}; "
            f"pick sizes with data*space = {n}, e.g. --mesh data={n},space=1"
        )
    return make_mesh(**sizes)


@functools.lru_cache(maxsize=8)
def _make_step(
    config: WFVAEConfig, mesh: Mesh, dtype: Any, t_chunk: int | None, store: str, storage: Any
):
    data = NamedSharding(mesh, P("data"))

    def step(params, video, key_data):
        post = encode(params, video, config, dtype=dtype, t_chunk=t_chunk, mesh=mesh)
        mean, logvar = post.mean.astype(jnp.float32), post.logvar.astype(jnp.float32)
        if store == "sample":
            keys = jax.random.wrap_key_data(key_data, impl="threefry2x32")  # (B,)
            eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], jnp.float32))(keys)
            return {"latent": (mean + jnp.exp(0.5 * logvar) * eps).astype(storage)}
        return {"mean": mean.astype(storage), "logvar": logvar.astype(storage)}

    video = activation_sharding(mesh)  # B over "data", H over "space"
    shardings = (replicated(mesh), video, data)
    return compile_options.jit(step, in_shardings=shardings, out_shardings=data)


def work_items(inputs, num_shards: int, finished: dict, per_shard: int) -> list[dict]:
    """This process's inputs, in order: those of its unfinished shards (``s % P == p``)."""
    items = []
    for s in range(jax.process_index(), num_shards, jax.process_count()):
        if s in finished:
            continue
        lo, hi = s * per_shard, min((s + 1) * per_shard, len(inputs))
        for i in range(lo, hi):
            items.append(
                {
                    "position": len(items),
                    "index": i,
                    "shard": s,
                    "last": i == hi - 1,
                    "shard_videos": [lo, hi],
                    "video": inputs.video_id(i),
                }
            )
    return items


_DEFAULT_OPTIONS = EncodeOptions()


@holds_lock("out", "wfvae encode-dataset --out")  # one run per output directory
def encode_dataset(
    params: Any,
    config: WFVAEConfig,
    inputs: VideoSource,
    out: str | os.PathLike,
    spec: ClipSpec,
    options: EncodeOptions = _DEFAULT_OPTIONS,
    *,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Encodes ``inputs``' clips into ``out`` (see the module doc); resumes a killed run.

    Every process of a multi-process run calls this with the same arguments.

    Args:
      params, config: the model (``wfvae_jax.load_pretrained``).
      inputs: the videos (``wfvae_jax.data.VideoFiles`` of a folder, ``TfdsVideoSource``).
      out: output directory (created).
      spec: the clips; options: :class:`EncodeOptions`.
      checkpoint: recorded in the manifest.
    Returns:
      ``{"num_records", "num_shards", "records_written", "shards_written",
      "shards_already_done", "skipped", "skipped_counts", "wall_s", "loop_s", "first_step_s",
      "input_wait_s", "steady_input_wait_s", "device_wait_s", "clips_per_s", "steps",
      "manifest"}``. ``*_written``, ``*_done``, the times and rates are this process's;
      ``clips_per_s`` and ``steady_*`` exclude the time up to the first written batch (it
      compiles; NaN after a single step); ``input_wait_s`` is the time the loop waited for
      decoded clips, ``device_wait_s`` for results.
    Raises:
      ValueError: bad settings, ``out`` holding another encoding (without ``overwrite``), or a
        non-finite latent (e.g. float16 storage overflow).
      Preempted: SIGTERM or SIGINT (``wfvae_jax.train.preemption``; a ``SystemExit``, status
        143 / 130): every process committed the shards it had finished, discarded the one in
        progress and printed one line; rerunning the same call finishes the encoding.
    """
    t_begin = time.perf_counter()
    out = os.path.abspath(os.fspath(out))
    check_clips(spec, config)
    options.check()
    dtype, storage = compute_dtype(options.dtype), fmt.storage_dtype(options.storage_dtype)
    n_proc, proc = jax.process_count(), jax.process_index()
    mesh = run_mesh(options.mesh)
    n_data = axis_size(mesh, "data")
    batch = options.batch_size or n_data
    if batch % n_data:
        raise ValueError(
            f"--batch_size {batch} must be a multiple of the mesh's data={n_data} devices"
        )
    local_batch, (h, w) = batch // n_proc, spec.size

    step = _make_step(config, mesh, dtype, options.t_chunk, options.store, storage)
    params_on_mesh = replicate(params, mesh)
    shapes = jax.eval_shape(  # validates frames and t_chunk before any decoding
        step,
        params_on_mesh,
        jax.ShapeDtypeStruct((batch, spec.num_frames, h, w, 3), jnp.float32),
        jax.ShapeDtypeStruct((batch, 2), jnp.uint32),
    )
    run = {
        "processes": n_proc,
        "devices": int(mesh.devices.size),
        "mesh": {"data": axis_size(mesh, "data"), "space": axis_size(mesh, "space")},
        "batch_size": batch,
    }
    latent_shape = list(next(iter(shapes.values())).shape[1:])
    manifest = new_manifest(
        params, config, inputs, spec, options,
        checkpoint=checkpoint, latent_shape=latent_shape, run=run,
    )  # fmt: skip
    finished = prepare_output(out, manifest, options.overwrite)
    items = work_items(inputs, manifest["num_shards"], finished, options.videos_per_shard)

    k = spec.clips_per_video
    bar = tqdm(
        total=len(items) * k,
        unit="clip",
        desc=f"encode (process {proc}/{n_proc})" if n_proc > 1 else "encode",
        disable=not options.progress or proc != 0,
        dynamic_ncols=True,
    )
    loop = Loop(out, step, params_on_mesh, mesh, manifest["spec_hash"], options, bar)
    loop.markers.update(finished)

    def on_video(item: dict) -> None:
        if len(item["starts"]) < k:  # fewer clips than the bar assumed
            bar.total -= k - len(item["starts"])
            bar.refresh()
        loop.stats["skipped"] += bool(item["error"])

    decoded = decode_in_workers(items, DecodeClips(inputs, spec), options.worker_count)
    empty = Batch(
        -1,
        np.zeros((local_batch, spec.num_frames, h, w, 3), np.float32),
        np.zeros((local_batch, 2), np.uint32),
        [None] * local_batch,
    )
    t_loop = time.perf_counter()
    with Preemption(PREEMPTION_GRACE_S, multiprocess=False) as preemption:
        batches = events(decoded, spec, local_batch, options.seed, on_video)
        done = loop.run(batches, empty, stop_requested=preemption.requested)
        t_end = time.perf_counter()
        # grain hands worker outputs over in shared memory, freed when the arrays die: drop the
        # loader now rather than at interpreter exit (where Python reports them as leaked).
        del decoded, batches
        gc.collect()
        bar.close()
        if not done:
            sync_processes("encode_dataset:stopped")  # every process has committed its shards
            complete = len(fmt.list_markers(out))
            preemption.stop(
                f"stopped encoding: {complete} of {manifest['num_shards']} shards are complete "
                f"in {out} (the shard in progress was discarded); rerun the same command to "
                f"finish: {resume_command()}"
            )

    manifest = final_manifest(manifest, loop.markers)
    if proc == 0:
        fmt.write_manifest(out, manifest)
    sync_processes("encode_dataset:done")
    return _summary(out, manifest, loop, len(finished), t_begin, t_loop, t_end)


def _summary(out, manifest, loop: Loop, already_done: int, t_begin, t_loop, t_end) -> dict:
    """:func:`encode_dataset`'s result (see there)."""
    stats, timing = loop.stats, loop.timing
    steady = stats["records"] - timing.get("first_records", 0)
    steady_s = t_end - timing.get("first_batch", t_end)
    return {
        "num_records": manifest["num_records"],
        "num_shards": manifest["num_shards"],
        "records_written": stats["records"],
        "shards_written": stats["shards"],
        "shards_already_done": already_done,
        "skipped": len(manifest["skipped"]),
        "skipped_counts": manifest["skipped_counts"],
        "wall_s": time.perf_counter() - t_begin,
        "loop_s": t_end - t_loop,
        "first_step_s": timing.get("first_batch", t_end) - t_loop,
        "input_wait_s": timing["input"],
        "steady_input_wait_s": timing.get("steady_input", 0.0),
        "device_wait_s": timing["device"],
        "clips_per_s": steady / steady_s if steady > 0 and steady_s > 0 else float("nan"),
        "steps": stats["steps"],
        "manifest": os.path.join(out, fmt.MANIFEST),
    }
