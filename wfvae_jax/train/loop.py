"""The train loop behind ``train.py``: build, restore, step, log, evaluate, checkpoint, export.

Source: the reference ``train_ddp.py`` (alternating generator/discriminator steps, EMA, periodic
validation of the raw and the EMA weights, periodic checkpoints), reorganised as in the Flax
examples: ``train_and_evaluate(config, workdir)`` with an ml_collections config.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

import wfvae_jax
from wfvae_jax.data import VideoFolderSource, make_video_dataset, window_span
from wfvae_jax.errors import UserError
from wfvae_jax.inference.sharding import make_mesh
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.io.video import abs_error_frames, save_strip_png
from wfvae_jax.lc import LCSettings
from wfvae_jax.losses import LossConfig, is_discriminator_step
from wfvae_jax.metrics import psnr
from wfvae_jax.train import checkpointing, config_check, writers
from wfvae_jax.train import mesh as mesh_lib
from wfvae_jax.train.checkpointing import CheckpointWriteError, RunCheckpoints
from wfvae_jax.train.data import (
    data_changes,
    data_manifest,
    load_eval_clips,
    resumed_data_seed,
)
from wfvae_jax.train.state import OptimConfig, TrainState
from wfvae_jax.train.step import StepConfig, TrainSteps, abstract_state, build_train_steps

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


def _data_order(
    config: ml_collections.ConfigDict, source: VideoFolderSource, ckpt: RunCheckpoints
) -> tuple[dict[str, Any], bool]:
    """``(manifest, restore_position)``: the data manifest of this run (its ``seed`` seeds the
    sampler) and whether the checkpoint's data position applies.

    A new run uses ``config.seed``. A resumed run whose data is as the checkpoint recorded keeps
    its seed and position. After a change (files added/removed/other frame counts, another
    window span, seed, worker or process count) it stops with a UserError naming the changes,
    unless ``data.allow_data_change``: then the order restarts at a fresh epoch over the files
    as they are now, shuffled with ``resumed_data_seed(seed, step)``.
    """
    step = ckpt.latest_step()
    manifest = data_manifest(
        source,
        seed=config.seed,
        config_seed=config.seed,
        worker_count=config.data.worker_count,
        processes=jax.process_count(),
    )
    if step is None:
        return manifest, False
    old = ckpt.read_meta(step).get("data")
    if old is None:  # a checkpoint from before data manifests: grain validates the position
        return manifest, True
    changes = data_changes(old, manifest)
    if not changes:
        return {**manifest, "seed": old["seed"]}, True
    summary = "; ".join(changes)
    if not config.data.allow_data_change:
        raise UserError(
            f"the training data changed since the checkpoint of step {step} in {ckpt.directory}: "
            f"{summary}",
            hint="rerun with --config.data.allow_data_change=True to continue with the files as "
            "they are now (the data order restarts with a new shuffle; docs/training.md), or "
            "put the files back",
        )
    seed = resumed_data_seed(config.seed, step)
    logger.warning(
        "the training data changed since step %d: %s. data.allow_data_change=True: continuing "
        "with %d videos; the data order restarts at a new epoch shuffled with seed %d = "
        "resumed_data_seed(seed=%d, step=%d)",
        step,
        summary,
        len(source),
        seed,
        config.seed,
        step,
    )
    return {**manifest, "seed": seed}, False


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


def _initial_state(
    config: ml_collections.ConfigDict,
    steps: TrainSteps,
    ckpt: RunCheckpoints,
    data_iterator: Any,
) -> TrainState:
    if ckpt.latest_step() is not None:
        # Restore straight into the target shardings; no need to initialise first.
        target = jax.tree.map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            abstract_state(step_config(config)),
            steps.state_sharding,
        )
        try:
            restored = ckpt.restore_latest(target, data_iterator)
        except ValueError as e:
            if "does not match" not in str(e):
                raise
            # Only checkpoints written before data manifests get here (grain's own check).
            raise UserError(
                f"the checkpoint in {ckpt.directory} was saved with other training data or data "
                f"settings (data.train_dir files, data.num_frames, data.worker_count, process "
                f"count) than this run's",
                hint="rerun with --config.data.allow_data_change=True to continue with a new "
                "data order, or restore the files and settings",
            ) from None
        logger.info("resumed from %s at step %d", ckpt.directory, int(restored.step))
        return restored
    state = steps.init(jax.random.key_data(jax.random.key(config.seed)))
    if config.init_from:
        sh = steps.state_sharding
        if layout.is_export_dir(config.init_from):
            params, _ = wfvae_jax.load_pretrained(config.init_from)
            # Through host numpy, as before load_pretrained returned device arrays: a
            # multi-process sharding is placed from host data on every process.
            params = jax.device_put(jax.tree.map(np.asarray, params), sh.params)
            # A fresh AdamW state does not depend on the parameter values.
            state = state.replace(params=params, ema_params=params)
        else:
            params, ema, opt_state = checkpointing.load_generator(config.init_from, state)
            state = state.replace(params=params, ema_params=ema, opt_state=opt_state)
        logger.info("initialised the generator from %s (fresh discriminator)", config.init_from)
    return state


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


def _evaluate(
    steps: TrainSteps, state: TrainState, clips: np.ndarray, batch_size: int
) -> tuple[dict[str, float], np.ndarray]:
    """Held-out PSNR (dB, mean over frames and clips) of the raw and EMA weights."""
    results, ema_recon = {}, None
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
        recon = []
        for i in range(0, len(clips), batch_size):
            x = jax.device_put(jnp.asarray(clips[i : i + batch_size]), steps.replicated)
            recon.append(np.asarray(steps.reconstruct(params, x)))
        recon = np.concatenate(recon)
        results[f"eval/psnr_{name}"] = float(np.mean(np.asarray(psnr(clips, recon))))
        if name == "ema":
            ema_recon = recon
    return results, ema_recon


def _save_strip(path: str, clips: np.ndarray, recon: np.ndarray, count: int) -> np.ndarray:
    rows, labels = [], []
    for i in range(min(count, len(clips))):
        rows += [clips[i], recon[i], abs_error_frames(clips[i], recon[i], gain=4.0)]
        labels += [f"input {i}", f"EMA rec {i}", "|err| x4"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_strip_png(path, rows, labels, num_samples=clips.shape[1])
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


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
      "samples": [png paths], "steps_per_sec": float, "export": path or None}`` for the steps
      this call ran (used by tests and the run report).
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
      TrainingInterrupted: Ctrl-C (a KeyboardInterrupt); says which checkpoint to resume from.
      ValueError: ``loss.perceptual_weight > 0`` without ``lpips.weights`` (the message says how
        to get them, or to set the weight to 0).
    """
    workdir = os.path.abspath(workdir)
    checkpointing.check_writable(workdir)
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
        return _train(config, workdir, cfg, lpips_params, mesh, local_batch, source, ckpt)
    except CheckpointWriteError:
        raise  # the manager is already shut down
    except BaseException:
        ckpt.close()  # a pending (finite, complete) checkpoint write is finished
        raise


def _train(config, workdir, cfg, lpips_params, mesh, local_batch, source, ckpt) -> dict:
    is_main = jax.process_index() == 0
    data_meta, restore_position = _data_order(config, source, ckpt)
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

    # ---- model, state and steps ----
    steps = build_train_steps(cfg, mesh, config.mesh.parallelism)
    state = _initial_state(config, steps, ckpt, data_iterator if restore_position else None)
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
    progress = None
    if is_main and sys.stderr.isatty():
        import tqdm

        progress = tqdm.tqdm(total=config.num_steps, initial=start, desc="train", unit="step")

    def run_eval() -> None:
        results, recon = _evaluate(steps, state, clips, config.eval.batch_size)
        history["eval"].append({"step": step, **results})
        if is_main:
            png = os.path.join(workdir, "samples", f"step_{step:07d}.png")
            strip = _save_strip(png, clips, recon, config.eval.num_png_clips)
            history["samples"].append(png)
            writer.write_scalars(step, results)
            writer.write_images(step, {"eval/reconstruction": strip[None]})
            logger.info(
                "eval step %d: held-out PSNR EMA %.2f dB, raw %.2f dB -> %s",
                step,
                results["eval/psnr_ema"],
                results["eval/psnr_raw"],
                png,
            )

    # ---- loop ----
    if step == start and config.eval.every_steps > 0:
        run_eval()
    # Rates exclude the first two steps of this call (they compile the generator and the
    # discriminator step) and the time spent in evaluation and checkpointing.
    warmup = start + 2
    clock = {"mark": None, "mark_step": step, "paused": 0.0, "total": 0.0, "total_steps": 0}
    rate = float("nan")
    try:
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
            if progress is not None:
                progress.update(1)
            if step == warmup or (clock["mark"] is None and step == config.num_steps):
                jax.block_until_ready(metrics)
                clock.update(mark=time.perf_counter(), mark_step=step, paused=0.0)

            save_now = step % config.checkpoint_every == 0 or step == config.num_steps
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
                eta = (config.num_steps - step) / rate if rate > 0 else float("nan")
                extra = {"train/steps_per_sec": rate}
                if "train/d_weight" in means:
                    extra["train/lambda_adv"] = means["train/d_weight"] * means["train/disc_factor"]
                writer.write_scalars(step, {**means, **extra})
                if progress is None and is_main:
                    logger.info(
                        "step %d/%d  loss %.4g  %.3f steps/s  ETA %s",
                        step,
                        config.num_steps,
                        means.get("train/total_loss", float("nan")),
                        rate,
                        _fmt_eta(eta),
                    )
            t_pause = time.perf_counter()
            if save_now:
                ckpt.save(state, data_iterator, meta)
            if config.eval.every_steps > 0 and (
                step % config.eval.every_steps == 0 or step == config.num_steps
            ):
                run_eval()
            clock["paused"] += time.perf_counter() - t_pause
    except KeyboardInterrupt:
        ckpt.wait()  # finish the write in flight: it holds a checked, finite state
        done = checkpointing.complete_steps(ckpt.directory)
        raise TrainingInterrupted(step, done[-1] if done else None, ckpt.directory) from None
    if clock["total_steps"]:
        rate = clock["total_steps"] / clock["total"]
    history["steps_per_sec"] = rate
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
    if progress is not None:
        progress.close()
    writer.flush()
    ckpt.close()
    if source.skipped:
        logger.info("skipped video files: %s", source.skipped_counts)
    return history


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
