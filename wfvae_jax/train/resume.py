"""Where a training run starts: its data order and its initial state.

A new run starts from ``config.seed`` (and ``config.init_from``'s generator, if set); a resumed
run from its latest checkpoint, with the data order it recorded, unless the training data
changed (:func:`data_order`).
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections
import numpy as np

import wfvae_jax
from wfvae_jax.data import VideoFolderSource
from wfvae_jax.errors import UserError
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.io import convert, torch_files
from wfvae_jax.io.torch_zip import load_torch_pickle
from wfvae_jax.losses import discriminator as disc_lib
from wfvae_jax.train import checkpointing
from wfvae_jax.train.checkpointing import RunCheckpoints
from wfvae_jax.train.data import data_changes, data_manifest, resumed_data_seed
from wfvae_jax.train.state import TrainState
from wfvae_jax.train.step import StepConfig, TrainSteps, abstract_state

logger = logging.getLogger(__name__)


def choose_checkpoint(cfg: StepConfig, steps: TrainSteps, ckpt: RunCheckpoints) -> int | None:
    """The step a run resumes from: the newest checkpoint in ``ckpt`` that restores completely
    (:meth:`RunCheckpoints.choose_resume_step`: a corrupt or half-written newer one is skipped,
    with a warning naming it and why). Call before :func:`data_order`."""
    return ckpt.choose_resume_step(_target(cfg, steps))


def _target(cfg: StepConfig, steps: TrainSteps) -> Any:
    """The state's shapes and dtypes in ``steps.state_sharding``: orbax restores straight into
    the target shardings, with no initialisation first."""
    return jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        abstract_state(cfg),
        steps.state_sharding,
    )


def data_order(
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


def initial_state(
    config: ml_collections.ConfigDict,
    cfg: StepConfig,
    steps: TrainSteps,
    ckpt: RunCheckpoints,
    data_iterator: Any,
) -> TrainState:
    """The state a run starts from, placed in ``steps.state_sharding``.

    The latest checkpoint in ``ckpt`` (restoring ``data_iterator``'s position too, unless it is
    ``None``), else a fresh state from ``config.seed`` whose generator is ``config.init_from``'s
    when set: an EXPORT, or a training checkpoint of ours (``checkpointing.load_generator``; the
    discriminator stays fresh), or a reference training checkpoint
    (:func:`reference_training_state`: generator and discriminator).

    Raises:
      UserError: a checkpoint written before data manifests whose data position does not match
        this run's data.
    """
    if ckpt.latest_step() is not None:
        try:
            restored = ckpt.restore_latest(_target(cfg, steps), data_iterator)
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
        if torch_files.is_torch_file(config.init_from):
            return reference_training_state(config.init_from, cfg, state, sh)
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


def reference_training_state(
    path: str, cfg: StepConfig, state: TrainState, sharding: Any, use_ema: bool = True
) -> TrainState:
    """``state`` with the generator and discriminator of a reference training checkpoint.

    ``path``: a ``.ckpt`` written by the reference's ``train_ddp.py`` (``save_checkpoint``, or
    Open-Sora Plan's copy of it). The generator is its EMA (``use_ema``; the parameters the EMA
    lacks, e.g. a ``--freeze_encoder`` run's encoder, come from ``state_dict.gen_model`` and are
    logged) else ``gen_model``: :func:`wfvae_jax.io.torch_files.generator_entry`; ``params``
    and ``ema_params`` both start from it. The discriminator is ``state_dict.dics_model``'s
    (:func:`wfvae_jax.io.torch_files.discriminator_entry`), BatchNorm statistics included; a
    checkpoint without one keeps the fresh discriminator (logged). Both AdamW states start
    fresh: the reference's are indexed by parameter position and tied to torch's ordering.

    Raises:
      UserError: the checkpoint cannot be read, or its generator or discriminator does not fit
        this run's model (``model.name``/``model.overrides``, ``disc_ndf``,
        ``loss.disc_num_layers``): the message names the differences and the fields to set.
    """
    try:
        obj = load_torch_pickle(path)
        entry = torch_files.generator_entry(obj, use_ema=use_ema)
        disc_sd = torch_files.discriminator_entry(obj)
    except (OSError, ValueError) as e:
        raise UserError(f"init_from={path!r}: {e}") from None
    filled = convert.describe_filled(entry.filled)
    sd, prefix, _ = convert.strip_key_prefix(entry.state_dict)
    try:
        params = convert.torch_state_dict_to_params(sd, cfg.model)
    except ValueError as e:
        raise UserError(
            f"init_from={path!r}: its generator ({entry.source}) does not fit this run's model: "
            f"{_architecture_differences(sd, cfg) or str(e).splitlines()[0]}",
            hint="set --config.model.name/--config.model.overrides to the checkpoint's "
            "architecture (wfvae convert --config infer prints it)",
        ) from None
    params = jax.device_put(params, sharding.params)
    state = state.replace(params=params, ema_params=params)
    logger.info(
        "initialised the generator from %s (%s%s)%s; fresh AdamW states",
        path,
        entry.source,
        f", key prefix {prefix!r} removed" if prefix else "",
        f"; {filled}" if filled else "",
    )
    if disc_sd is None:
        logger.warning("%s holds no discriminator (state_dict.dics_model): a fresh one", path)
        return state
    n_layers = cfg.loss.disc_num_layers
    try:
        disc_params, stats = disc_lib.from_torch_state_dict(disc_sd, n_layers)
    except ValueError as e:
        raise UserError(
            f"init_from={path!r}: its discriminator does not fit loss.disc_num_layers="
            f"{n_layers}: {e}",
            hint="set --config.loss.disc_num_layers to the checkpoint's",
        ) from None
    want = jax.tree.map(lambda a: a.shape, (state.disc_params, state.disc_batch_stats))
    got = jax.tree.map(lambda a: a.shape, (disc_params, stats))
    ndf = disc_sd["main.0.weight"].shape[0]
    if ndf != cfg.disc_ndf or want != got:
        raise UserError(
            f"init_from={path!r}: its discriminator is {ndf} channels wide (main.0.weight "
            f"{disc_sd['main.0.weight'].shape}), this run's disc_ndf={cfg.disc_ndf}",
            hint=f"set --config.disc_ndf={ndf}",
        )
    return state.replace(
        disc_params=jax.device_put(disc_params, sharding.disc_params),
        disc_batch_stats=jax.device_put(stats, sharding.disc_batch_stats),
    )


def _architecture_differences(sd: dict[str, np.ndarray], cfg: StepConfig) -> str:
    """``field: run vs checkpoint`` for each architecture field that differs, else ``""``."""
    try:
        inferred = convert.infer_config_fields(sd)
    except ValueError:
        return ""
    return "; ".join(convert.config_differences(cfg.model, inferred))
