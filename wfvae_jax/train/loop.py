"""The train loop behind ``train.py``: build, restore, step, log, evaluate, checkpoint, export.

Source: the reference ``train_ddp.py`` (alternating generator/discriminator steps, EMA, periodic
validation of the raw and the EMA weights, periodic checkpoints), reorganised as in the Flax
examples: ``train_and_evaluate(config, workdir)`` with an ml_collections config.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

import wfvae_jax
from wfvae_jax.data import VideoFolderSource, make_video_dataset, window_span
from wfvae_jax.inference.sharding import make_mesh
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.io.folder_lock import lock_folder
from wfvae_jax.lc import LCSettings
from wfvae_jax.losses import LossConfig, is_discriminator_step
from wfvae_jax.train import checkpointing, config_check, progress, writers
from wfvae_jax.train import mesh as mesh_lib
from wfvae_jax.train.checkpointing import CheckpointWriteError, RunCheckpoints
from wfvae_jax.train.data import load_eval_clips
from wfvae_jax.train.held_out import evaluate_psnr, save_eval_strip
from wfvae_jax.train.preemption import Preemption
from wfvae_jax.train.resume import choose_checkpoint, data_order, initial_state
from wfvae_jax.train.state import OptimConfig
from wfvae_jax.train.step import StepConfig, build_train_steps

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient norm became NaN/Inf; training stopped without saving."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the pending checkpoint write was finished first.

    Attributes: ``step`` (the step reached), ``last_good`` (newest complete checkpoint's step or
    None), ``path`` (its directory or None), ``directory`` (the checkpoints directory).
    """

    def __init__(self, step: int, last_good: int | None, directory: str):
        self.step, self.last_good, self.directory = step, last_good, directory
        self.path = None if last_good is None else os.path.join(directory, str(last_good))
        where = (
            "no checkpoint was saved yet (a rerun starts at step 0)"
            if last_good is None
            else f"the last checkpoint is step {last_good} in {self.path}"
        )
        super().__init__(f"interrupted at step {step}; {where}")


# The architecture of a run config: ``init_from``'s ``config.json`` when it is a converted
# checkpoint directory, else ``get_config(config.model.name)`` with ``config.model.overrides``.
model_config = config_check.model_config


def step_config(config: ml_collections.ConfigDict) -> StepConfig:
    """The static :class:`StepConfig` of a run config."""
    return StepConfig(
        model=model_config(config),
        loss=LossConfig(**dict(config.loss)),
        optim=OptimConfig(**dict(config.optim)),
        disc_ndf=config.disc_ndf,
        ema_decay=config.ema_decay,
        compute_dtype=config.compute_dtype,
        lpips_net=config.lpips.net,
        lc=lc_settings(config),
    )


def lc_settings(config: ml_collections.ConfigDict) -> LCSettings | None:
    """LC-VAE settings from ``config.model.lc`` (``None`` unless ``lc.enabled``)."""
    lc = config.model.get("lc")
    if lc is None or not lc.enabled:
        return None
    return LCSettings.from_dict(lc.to_dict())


def _load_lpips(cfg: StepConfig, config: ml_collections.ConfigDict) -> Any:
    if not cfg.uses_lpips:
        return None
    from wfvae_jax.metrics.lpips import load_lpips

    # Raises LPIPSWeightsMissing (a ValueError saying how to get the weights, or to set
    # loss.perceptual_weight=0) before anything expensive happens.
    try:
        _, params = load_lpips(config.lpips.net, config.lpips.weights or None)
    except ValueError as e:
        raise ValueError(
            f"{e} With train.py: --config.lpips.weights=PATH, or --config.loss.perceptual_weight=0."
        ) from e
    return params


def _train_source(config: ml_collections.ConfigDict, workdir: str) -> VideoFolderSource:
    d = config.data
    span = window_span(d.num_frames, d.frame_stride)
    exclude = [*d.exclude, *config.eval.files]
    source = VideoFolderSource(
        d.train_dir,
        exclude=exclude,
        min_frames=span,
        cache_dir=d.cache_dir or os.path.join(workdir, "cache"),
    )
    logger.info(
        "training on %d videos under %s (held out: %s)",
        len(source),
        source.root,
        [os.path.basename(p) for p in source.excluded],
    )
    return source


def _train_iterator(
    config: ml_collections.ConfigDict, source: VideoFolderSource, local_batch: int, seed: int
):
    d = config.data
    return make_video_dataset(
        source,
        num_frames=d.num_frames,
        resolution=d.resolution,
        batch_size=local_batch,
        seed=seed,
        frame_stride=d.frame_stride,
        crop=d.crop,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        worker_count=d.worker_count,
    )


def _count_failed_reads(source: VideoFolderSource, keys: Any) -> None:
    """Counts the files that failed to read in this batch (``SampleClip`` replaced them) as
    unreadable, as the scan counts the files it finds bad."""
    if keys is None:
        return
    for key in np.unique(np.asarray(keys)):
        if key >= 0:
            path = source.paths[int(key)]
            why = "file deleted" if not os.path.exists(path) else "read or decode failed"
            source.mark_unreadable(int(key), why)


class _MetricBuffer:
    """Device metrics of recent steps; checked for NaN/Inf and averaged when drained.

    Keeping them on device lets accelerators run ahead; the host syncs only every
    ``log_every`` steps and before each checkpoint.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self.pending.append((step, metrics))

    def drain(self, last_good: str) -> tuple[dict[str, float], list[tuple[int, dict]]]:
        fetched = [(s, jax.device_get(m)) for s, m in self.pending]
        self.pending = []
        for step, m in fetched:
            bad = sorted(k for k, v in m.items() if not np.isfinite(v))
            if bad:
                values = ", ".join(f"{k}={float(m[k])}" for k in bad)
                raise NonFiniteLossError(
                    f"non-finite training values at step {step}: {values}. Training stopped "
                    f"without saving; {last_good}. Lower optim.learning_rate, try "
                    f"compute_dtype='float32' or optim.grad_clip_norm > 0, then rerun to resume."
                )
        sums: dict[str, list[float]] = {}
        for _, m in fetched:
            for k, v in m.items():
                sums.setdefault(k, []).append(float(v))
        return {k: float(np.mean(v)) for k, v in sums.items()}, fetched


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` if it holds a checkpoint) to ``config.num_steps``.

    Returns:
      ``{"losses": {step: {metric: value}}, "eval": [{"step", "eval/psnr_ema", "eval/psnr_raw"}],
      "samples": [png paths], "steps_per_sec": float, "export": path or None, "start": int,
      "step": int}`` for the steps this call ran, from ``start`` to ``step`` (used by tests and
      the end-of-run summary, :func:`wfvae_jax.train.progress.summary`).
    Before building anything: the workdir is probed for writing and the whole config is checked
    (:func:`wfvae_jax.train.config_check.check_config`). A training file that fails to read
    during the run is replaced by the next readable one and counted (``history["skipped"]``).

    Raises:
      UserError: an unwritable workdir; a config error (naming the field and the nearest valid
        value); training data changed since the checkpoint (without
        ``data.allow_data_change``).
      NonFiniteLossError: a NaN/Inf loss or gradient norm (nothing is saved after it).
      CheckpointWriteError: a checkpoint write failed (disk full, I/O error); the message names
        the path and the last good checkpoint, which is kept.
      Preempted: SIGTERM or SIGINT (``wfvae_jax.train.preemption``): the step reached was
        saved and one line printed; a ``SystemExit`` with status 128 + the signal number.
      TrainingInterrupted: a KeyboardInterrupt raised while no signal handler is installed;
        says which checkpoint to resume from.
      ValueError: ``loss.perceptual_weight > 0`` without ``lpips.weights`` (the message says how
        to get them, or to set the weight to 0).
    """
    workdir = os.path.abspath(workdir)
    checkpointing.check_writable(workdir)
    with lock_folder(workdir, "train.py --workdir"):  # one run per workdir
        return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    config_check.check_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    cfg = step_config(config)
    lpips_params = _load_lpips(cfg, config)

    # ---- mesh and data ----
    mesh = make_mesh(fsdp=config.mesh.fsdp)
    local_batch = config.data.batch_size // jax.process_count()
    source = _train_source(config, workdir)
    ckpt = RunCheckpoints(workdir, max_to_keep=config.keep_checkpoints)
    try:
        with Preemption(config.preemption_grace_s) as preemption:
            return _train(
                config, workdir, cfg, lpips_params, mesh, local_batch, source, ckpt, preemption
            )
    except CheckpointWriteError:
        raise  # the manager is already shut down
    except BaseException:
        ckpt.close()  # a pending (finite, complete) checkpoint write is finished
        raise


def _train(config, workdir, cfg, lpips_params, mesh, local_batch, source, ckpt, preemption) -> dict:
    is_main = jax.process_index() == 0
    steps = build_train_steps(cfg, mesh, config.mesh.parallelism)
    choose_checkpoint(cfg, steps, ckpt)  # the newest that restores; corrupt ones are skipped
    data_meta, restore_position = data_order(config, source, ckpt)
    data_iterator = _train_iterator(config, source, local_batch, data_meta["seed"])
    clips = None
    if config.eval.every_steps > 0:
        clips = load_eval_clips(
            config.eval.files,
            num_frames=config.eval.num_frames,
            resolution=config.eval.resolution,
            frame_stride=config.eval.frame_stride,
            clips_per_video=config.eval.clips_per_video,
        )

    # ---- model and state ----
    state = initial_state(config, cfg, steps, ckpt, data_iterator if restore_position else None)
    if lpips_params is not None:
        lpips_params = jax.device_put(lpips_params, steps.replicated)
    writer = writers.create_default_writer(workdir, just_logging=not is_main)
    meta = {
        "config": config.to_json_best_effort(),
        "model": cfg.model.to_dict(),
        "data": data_meta,
    }
    if is_main:
        n_params = sum(x.size for x in jax.tree.leaves(state.params))
        n_disc = sum(x.size for x in jax.tree.leaves(state.disc_params))
        logger.info(
            "WF-VAE %.2fM params, discriminator %.2fM; mesh %s; batch %d; %s compute",
            n_params / 1e6,
            n_disc / 1e6,
            dict(mesh.shape),
            config.data.batch_size,
            cfg.compute_dtype,
        )

    history: dict[str, Any] = {
        "losses": {},
        "eval": [],
        "samples": [],
        "export": None,
        "skipped": source.skipped,
    }
    buffer = _MetricBuffer()
    start = int(jax.device_get(state.step))
    step = start
    bar = progress.Progress(config.num_steps, start, enabled=is_main)

    def run_eval() -> None:
        bar.set_phase(progress.EVALUATING)
        results, recon = evaluate_psnr(steps, state, clips, config.eval.batch_size)
        history["eval"].append({"step": step, **results})
        if is_main:
            png = os.path.join(workdir, "samples", f"step_{step:07d}.png")
            strip = save_eval_strip(png, clips, recon, config.eval.num_png_clips)
            history["samples"].append(png)
            writer.write_scalars(step, results)
            writer.write_images(step, {"eval/reconstruction": strip[None]})
        bar.evaluated(step, results, png if is_main else "")

    # ---- loop ----
    # Rates exclude the first two steps of this call (they compile the generator and the
    # discriminator step) and the time spent in evaluation and checkpointing.
    warmup = start + 2
    clock = {"mark": None, "mark_step": step, "paused": 0.0, "total": 0.0, "total_steps": 0}
    rate = float("nan")
    try:
        if step == start and config.eval.every_steps > 0:
            run_eval()
        while step < config.num_steps:
            element = next(data_iterator)
            _count_failed_reads(source, element.get("skipped_key"))
            video = mesh_lib.global_batch(np.asarray(element["video"]), steps.batch_sharding)
            if bool(is_discriminator_step(step, cfg.loss.disc_start)):
                state, metrics = steps.discriminator(state, video, lpips_params)
            else:
                state, metrics = steps.generator(state, video, lpips_params)
            buffer.add(step, metrics)
            step += 1
            bar.update(step)
            if step == warmup or (clock["mark"] is None and step == config.num_steps):
                jax.block_until_ready(metrics)
                clock.update(mark=time.perf_counter(), mark_step=step, paused=0.0)
                bar.running(step)

            preempted = preemption.reached(step)  # SIGTERM/SIGINT: save this step, stop
            save_now = step % config.checkpoint_every == 0 or step == config.num_steps or preempted
            if step % config.log_every == 0 or save_now:
                means, fetched = buffer.drain(ckpt.last_good_message())
                for s, m in fetched:
                    history["losses"][s] = {k: float(v) for k, v in m.items()}
                now = time.perf_counter()
                if clock["mark"] is not None and step > clock["mark_step"]:
                    elapsed = now - clock["mark"] - clock["paused"]
                    rate = (step - clock["mark_step"]) / elapsed
                    clock["total"] += elapsed
                    clock["total_steps"] += step - clock["mark_step"]
                    clock.update(mark=now, mark_step=step, paused=0.0)
                extra = {"train/steps_per_sec": rate}
                if "train/d_weight" in means:
                    extra["train/lambda_adv"] = means["train/d_weight"] * means["train/disc_factor"]
                writer.write_scalars(step, {**means, **extra})
                bar.metrics(step, means, rate)
            t_pause = time.perf_counter()
            if save_now:
                ckpt.save(state, data_iterator, meta)
            if preempted:
                preemption.exit(step, ckpt)  # raises Preempted (a SystemExit)
            if config.eval.every_steps > 0 and (
                step % config.eval.every_steps == 0 or step == config.num_steps
            ):
                run_eval()
            clock["paused"] += time.perf_counter() - t_pause
    except KeyboardInterrupt:
        ckpt.wait()  # finish the write in flight: it holds a checked, finite state
        done = checkpointing.complete_steps(ckpt.directory)
        raise TrainingInterrupted(step, done[-1] if done else None, ckpt.directory) from None
    finally:
        bar.close()  # before any message: an error line never shares the bar's line
    if clock["total_steps"]:
        rate = clock["total_steps"] / clock["total"]
    history.update(steps_per_sec=rate, start=start, step=step)
    if step > start:  # this call trained: the final state was checked and saved above
        ckpt.wait()
    if config.export and step >= config.num_steps:
        export_dir = os.path.join(workdir, layout.WORKDIR_EXPORT)
        ema = multihost_utils.process_allgather(state.ema_params, tiled=True)
        # Every process calls it: process 0 writes the files, the others wait for it.
        wfvae_jax.save_pretrained(export_dir, ema, cfg.model, lc=cfg.lc)
        if is_main:
            logger.info("exported the EMA weights to %s (wfvae_jax.load_pretrained)", export_dir)
        history["export"] = export_dir
    writer.flush()
    ckpt.close()
    if source.skipped:
        logger.info("skipped video files: %s", source.skipped_counts)
    return history
