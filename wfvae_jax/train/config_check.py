"""Checks a whole training config before anything is built (no model, no compile, no data read).

:func:`check_config` raises one :class:`~wfvae_jax.errors.UserError` for the first problem,
naming the config field, the value and (where there is one) the nearest valid value, with the
``--config.FIELD=VALUE`` override as the hint. ``train.py`` prints it as one ``error:`` line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

import wfvae_jax
from wfvae_jax import configs
from wfvae_jax.configs import default
from wfvae_jax.core.config import NAMED_CONFIGS, WFVAEConfig
from wfvae_jax.errors import UserError
from wfvae_jax.io import checkpoint as layout

CROPS = ("random", "center")
PARALLELISMS = ("gspmd", "shard_map")
LPIPS_NETS = ("vgg", "alex")


def _set(field: str, value: Any) -> str:
    return f"--config.{field}={value}"


def _leaves(tree: Mapping[str, Any]) -> Iterator[str]:
    return (name for name, _ in configs.leaves(tree))


def default_keys() -> set[str]:
    """Every leaf field of the default config (``data.num_frames``, ...)."""
    return set(_leaves(default.get_config().to_dict()))


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Raises UserError for a key that the default config does not define (a typo)."""
    known = default_keys()
    for name in _leaves(config.to_dict()):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]}?" if close else ""
            raise UserError(
                f"unknown config field {name}{guess}",
                hint="wfvae train --help lists every field with its meaning",
            )
    overrides = dict(config.model.get("overrides", {}))
    fields = {f.name for f in dataclasses.fields(WFVAEConfig) if f.init}
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            guess = f"; did you mean model.overrides.{close[0]}?" if close else ""
            raise UserError(
                f"model.overrides.{key} is not a WFVAEConfig field{guess}",
                hint="model.overrides takes wfvae_jax.core.config.WFVAEConfig fields",
            )


def _positive_int(config: ml_collections.ConfigDict, field: str, minimum: int = 1) -> int:
    value = config
    for part in field.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"{field} must be an integer >= {minimum}, got {value!r}",
            hint=_set(field, max(minimum, 1)),
        )
    return value


def _check_frames(model: WFVAEConfig, field: str, t: int) -> None:
    if not model.is_valid_num_frames(t):
        d, near = model.temporal_downsample, model.nearest_num_frames(t)
        raise UserError(
            f"{field}={t} is not a valid frame count: this model (temporal_downsample {d}) "
            f"takes 1 + {d}k frames; nearest valid is {near}",
            hint=_set(field, near),
        )


def _check_resolution(model: WFVAEConfig, field: str, value: Any) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if is_int(value):
        sizes = [value]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_int, value)):
        sizes = list(value)
    else:
        raise UserError(f"{field} must be an int or (height, width), got {value!r}")
    m = model.spatial_downsample
    bad = [s for s in sizes if s < m or s % m]
    if bad:
        near = [max(m, int(round(s / m)) * m) for s in sizes]
        text = str(near[0]) if len(near) == 1 else f"({near[0]}, {near[1]})"
        raise UserError(
            f"{field}={value!r} must be a positive multiple of {m} (the model downsamples by "
            f"{m}); nearest valid is {text}",
            hint=_set(field, text),
        )


def model_config(config: ml_collections.ConfigDict) -> WFVAEConfig:
    """The architecture :func:`wfvae_jax.train.loop.model_config` builds, with errors naming the
    config field."""
    init_from = config.init_from
    if init_from and layout.is_export_dir(init_from):
        try:
            return layout.load_export_config(init_from)
        except (ValueError, OSError) as e:
            raise UserError(f"init_from={init_from!r}: cannot read its config.json: {e}") from e
    name = config.model.name
    if name not in NAMED_CONFIGS:
        close = difflib.get_close_matches(name, sorted(NAMED_CONFIGS), n=1, cutoff=0.5)
        raise UserError(
            f"model.name={name!r} is not a WF-VAE config"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            hint=f"one of {', '.join(sorted(NAMED_CONFIGS))}",
        )
    try:
        return wfvae_jax.get_config(name).replace(**dict(config.model.overrides))
    except (TypeError, ValueError) as e:
        raise UserError(f"model.overrides: {e}") from e


def check_config(
    config: ml_collections.ConfigDict, *, num_devices: int = 1, num_processes: int = 1
) -> WFVAEConfig:
    """Validates every field of a training config; returns the model's :class:`WFVAEConfig`.

    Checks (in this order): unknown keys (typos, against the default config); step counts;
    ``preemption_grace_s`` (seconds > 0); ``init_from`` (exists, is a workdir with a checkpoint
    or a converted checkpoint); the model (name, overrides); ``data.train_dir`` (a directory);
    frame counts (``data.num_frames``, ``eval.num_frames``: ``1 + k * temporal_downsample``);
    resolutions (multiples of 8); the batch (divisible by ``num_devices`` and
    ``num_processes``); crop, workers, eval files; loss, optimizer, LC, LPIPS and mesh settings.

    Raises:
      UserError: the first problem, naming the field and the nearest valid value.
    """
    from wfvae_jax.train import checkpointing  # orbax; only for init_from

    check_keys(config)
    for field in ("num_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        _positive_int(config, field)
    grace = config.preemption_grace_s
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace > 0:
        raise UserError(
            f"preemption_grace_s must be a number of seconds > 0, got {grace!r}",
            hint=_set("preemption_grace_s", 25.0),
        )
    if config.init_from:
        checkpointing.check_init_from(config.init_from)
    model = model_config(config)

    d = config.data
    if not d.train_dir:
        raise UserError(
            "data.train_dir is not set: name the folder of training videos",
            hint=_set("data.train_dir", "/path/to/videos"),
        )
    if not os.path.isdir(d.train_dir):
        what = "is not a directory" if os.path.exists(d.train_dir) else "does not exist"
        raise UserError(
            f"data.train_dir={d.train_dir!r} {what}",
            hint="point --config.data.train_dir at a folder of videos (searched recursively)",
        )
    _positive_int(config, "data.num_frames")
    _positive_int(config, "data.frame_stride")
    _check_frames(model, "data.num_frames", d.num_frames)
    _check_resolution(model, "data.resolution", d.resolution)
    batch = _positive_int(config, "data.batch_size")
    unit = math.lcm(num_devices, num_processes)
    if batch % unit:
        near = max(unit, int(round(batch / unit)) * unit)
        raise UserError(
            f"data.batch_size={batch} must be divisible by the {num_devices} devices and "
            f"{num_processes} processes; nearest valid is {near}",
            hint=_set("data.batch_size", near),
        )
    if d.crop not in CROPS:
        raise UserError(f"data.crop must be one of {CROPS}, got {d.crop!r}")
    _positive_int(config, "data.worker_count", minimum=0)

    e = config.eval
    _positive_int(config, "eval.every_steps", minimum=0)
    if e.every_steps > 0:
        if not e.files:
            raise UserError(
                "eval.files is empty but eval.every_steps > 0: name at least one held-out video",
                hint="--config.eval.files=/data/val/a.mp4 (repeat the flag for more files) or "
                "--config.eval.every_steps=0",
            )
        for path in e.files:
            if not os.path.isfile(path):
                raise UserError(
                    f"eval.files: {path!r} does not exist", hint="or set eval.every_steps=0"
                )
        for field in ("eval.num_frames", "eval.frame_stride", "eval.batch_size"):
            _positive_int(config, field)
        _positive_int(config, "eval.clips_per_video")
        _positive_int(config, "eval.num_png_clips", minimum=0)
        _check_frames(model, "eval.num_frames", e.num_frames)
        _check_resolution(model, "eval.resolution", e.resolution)

    from wfvae_jax.losses import LossConfig
    from wfvae_jax.train.state import OptimConfig
    from wfvae_jax.train.step import COMPUTE_DTYPES

    for field, build in (("loss", LossConfig), ("optim", OptimConfig)):
        try:
            build(**dict(config[field]))
        except (TypeError, ValueError) as err:
            raise UserError(f"{field}: {err}") from err
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise UserError(
            f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {config.compute_dtype!r}"
        )
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    _positive_int(config, "disc_ndf")
    if config.lpips.net not in LPIPS_NETS:
        raise UserError(f"lpips.net must be one of {LPIPS_NETS}, got {config.lpips.net!r}")
    lc = config.model.get("lc")
    if lc is not None and lc.enabled:
        from wfvae_jax.lc import LCSettings

        try:
            LCSettings.from_dict(lc.to_dict())
        except (TypeError, ValueError) as err:
            raise UserError(f"model.lc: {err}") from err
    fsdp = config.mesh.fsdp
    if isinstance(fsdp, bool) or not isinstance(fsdp, int) or fsdp < 1 or num_devices % fsdp:
        raise UserError(
            f"mesh.fsdp={fsdp!r} must be >= 1 and divide the {num_devices} devices",
            hint=_set("mesh.fsdp", 1),
        )
    if config.mesh.parallelism not in PARALLELISMS:
        raise UserError(
            f"mesh.parallelism must be one of {PARALLELISMS}, got {config.mesh.parallelism!r}"
        )
    return model
