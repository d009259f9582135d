"""Load model weights from a PyTorch checkpoint file or directory, as numpy, without torch.

Supported files (see :func:`load_state_dict`), each read by its owner:

* ``*.safetensors`` files and sharded safetensors (a ``*.safetensors.index.json`` and the shard
  files next to it): :mod:`wfvae_jax.io.safetensors_files`;
* torch zip-format files (``torch.save``'s default since torch 1.6) named ``*.ckpt``, ``*.pt``,
  ``*.pth`` or ``*.bin``, e.g. the reference's training checkpoints (``train_ddp.py``'s
  ``save_checkpoint``) and torchvision-style state dicts: :mod:`wfvae_jax.io.torch_zip` (no
  pickled code runs; zip bombs are refused). A training checkpoint's generator weights are picked
  by :func:`select_generator_state_dict`, as the reference does.

Which file of a REFERENCE directory holds the weights is :func:`reference_weights`' answer (this
module owns the reference's weight-file names); the other layouts are
:mod:`wfvae_jax.io.checkpoint`'s. Truncated or corrupt files raise ``ValueError`` naming the file
and suggesting an incomplete download; bfloat16 is widened to float32 by default
(:mod:`wfvae_jax.io.weight_files`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wfvae_jax.io.safetensors_files import (
    index_shards,
    load_safetensors,
    load_sharded_safetensors,
)
from wfvae_jax.io.torch_zip import load_torch_pickle

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
# The weights file of the reference's release layout (diffusers save_pretrained).
RELEASE_WEIGHTS = "diffusion_pytorch_model.safetensors"


def _is_flat_array_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    )


def select_generator_state_dict(obj: Any, use_ema: bool = True) -> dict[str, np.ndarray]:
    """Pick the generator (VAE) weights out of a loaded checkpoint tree.

    Mirrors ``WFVAEModel.init_from_ckpt`` (causalvideovae/model/vae/modeling_wfvae.py):

    1. if ``use_ema`` and ``obj["ema_state_dict"]`` exists and is non-empty, use it with every
       ``"module."`` removed from the keys (the reference uses ``str.replace``; the EMA shadow
       was taken from the DDP-wrapped model). The EMA shadow holds only trainable parameters;
       the others (the wavelet filters, a ``--freeze_encoder`` run's encoder) are taken from
       ``state_dict["gen_model"]`` when the checkpoint has it (:func:`generator_entry`), where
       the reference's ``strict=False`` load would leave them at their initial values;
    2. elif ``"state_dict"`` in ``obj``: ``obj["state_dict"]["gen_model"]`` if present, else
       ``obj["state_dict"]``;
    3. else ``obj`` itself (a plain state dict, e.g. a torchvision ``.pth``).

    ``use_ema=False`` corresponds to the reference run with the environment variable
    ``NOT_USE_EMA_MODEL`` set (to any value: the reference compares the string with ``0``, so
    even ``NOT_USE_EMA_MODEL=0`` disables EMA). The environment is not read here.

    Args:
        obj: the tree from :func:`load_torch_pickle`.
        use_ema: prefer the EMA weights when present.

    Returns:
        A new ``dict`` from parameter name to ``np.ndarray``.

    Raises:
        ValueError: ``obj`` is not a mapping or the selected entry is not a flat str -> array
            mapping.
    """
    return generator_entry(obj, use_ema).state_dict


class GeneratorEntry(NamedTuple):
    """Where a checkpoint's generator weights came from (:func:`generator_entry`).

    ``source``: ``"ema_state_dict"``, ``"state_dict.gen_model"``, ``"state_dict"`` or
    ``"checkpoint root"``; ``state_dict``: name -> array; ``filled``: the keys (sorted) that
    ``ema_state_dict`` lacked and ``state_dict.gen_model`` supplied.
    """

    source: str
    state_dict: dict[str, np.ndarray]
    filled: list[str]


def generator_entry(obj: Any, use_ema: bool = True) -> GeneratorEntry:
    """:func:`select_generator_state_dict`'s choice, with the EMA completed from ``gen_model``.

    The reference's EMA shadow holds only parameters that required grad (``EMA.register``,
    causalvideovae/model/ema_model.py): never the frozen Haar kernels and buffers, and with
    ``train_ddp.py --freeze_encoder`` none of the encoder. The reference's loader leaves those
    at their initial values (``load_state_dict(strict=False)``); Open-Sora Plan's
    ``merge_encoder_and_decoder.py`` copies them in by hand. Here every key of
    ``state_dict.gen_model`` missing from the EMA is taken from ``gen_model`` (the weights the
    run trained or kept frozen) and named in ``filled``.

    Raises:
        ValueError: as :func:`select_generator_state_dict`.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint root must be a mapping, got {type(obj).__name__}")
    ema = obj.get("ema_state_dict")
    gen = obj.get("state_dict")
    gen = gen.get("gen_model") if isinstance(gen, Mapping) else None
    filled: list[str] = []
    if use_ema and isinstance(ema, Mapping) and len(ema) > 0:
        source, selected = "ema_state_dict", {k.replace("module.", ""): v for k, v in ema.items()}
        if _is_flat_array_dict(gen):
            filled = sorted(k for k in gen if k not in selected)
            selected.update((k, gen[k]) for k in filled)
    elif "state_dict" in obj:
        selected = obj["state_dict"]
        source = "state_dict"
        if isinstance(selected, Mapping) and "gen_model" in selected:
            selected, source = selected["gen_model"], "state_dict.gen_model"
    else:
        source, selected = "checkpoint root", obj
    if not _is_flat_array_dict(selected):
        bad = (
            [k for k, v in selected.items() if not isinstance(v, np.ndarray)][:5]
            if isinstance(selected, Mapping)
            else type(selected).__name__
        )
        raise ValueError(
            f"{source} is not a flat mapping of parameter name -> tensor (offending: {bad})"
        )
    return GeneratorEntry(source, dict(selected), filled)


def discriminator_entry(obj: Any) -> dict[str, np.ndarray] | None:
    """The discriminator's state dict of a reference training checkpoint, or None if absent.

    ``train_ddp.py`` saves ``state_dict["dics_model"]`` (sic) as the state dict of the whole
    ``LPIPSWithDiscriminator3D``: ``discriminator.*`` (the ``NLayerDiscriminator3D``), plus
    ``logvar`` and the LPIPS network (``perceptual_loss.*``), which are not trained. Returns the
    ``discriminator.*`` entries with that prefix (and any DDP ``module.``) removed.

    Raises:
        ValueError: ``dics_model`` exists but holds no ``discriminator.*`` tensors.
    """
    sd = obj.get("state_dict") if isinstance(obj, Mapping) else None
    sd = sd.get("dics_model") if isinstance(sd, Mapping) else None
    if not isinstance(sd, Mapping) or not sd:
        return None
    prefix = "discriminator."
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.startswith(prefix) and isinstance(value, np.ndarray):
            out[key[len(prefix) :]] = value
    if not out:
        raise ValueError(
            f"state_dict.dics_model holds no {prefix}* tensors (keys: {sorted(sd)[:5]})"
        )
    return out


def is_torch_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an existing file named like a torch checkpoint (:data:`TORCH_SUFFIXES`),
    e.g. a reference training checkpoint."""
    p = Path(path)
    return p.suffix.lower() in TORCH_SUFFIXES and p.is_file()


def reference_weights(directory: str | os.PathLike) -> Path:
    """The one weights file of a REFERENCE directory (``wfvae_jax.io.checkpoint`` lists the
    layouts).

    Candidates: ``diffusion_pytorch_model*.safetensors`` (not shards listed by an index),
    ``*.safetensors.index.json``, and ``*.ckpt``/``*.pt``/``*.pth``/``*.bin``. Other files
    (e.g. ``vectors.safetensors``) are not weights.

    Raises:
      FileNotFoundError: no candidate (the message lists the directory's files).
      ValueError: several candidates (named; never a silent pick: pass the one file instead).
    """
    d = Path(directory)
    files = sorted(p for p in d.iterdir() if p.is_file())
    indexes = [p for p in files if p.name.endswith(SAFETENSORS_INDEX_SUFFIX)]
    shards = set().union(*(index_shards(p) for p in indexes)) if indexes else set()
    stem = RELEASE_WEIGHTS.removesuffix(SAFETENSORS_SUFFIX)
    safetensors = [
        p
        for p in files
        if p.name.startswith(stem) and p.name.endswith(SAFETENSORS_SUFFIX) and p.name not in shards
    ]
    torch_files = [p for p in files if p.suffix.lower() in TORCH_SUFFIXES]
    candidates = indexes + safetensors + torch_files
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(
            f"no weights in {d}: expected {RELEASE_WEIGHTS}, a *{SAFETENSORS_INDEX_SUFFIX}, or "
            f"one *{'/*'.join(TORCH_SUFFIXES)} file; found {[p.name for p in files]}"
        )
    raise ValueError(
        f"{d} holds {len(candidates)} candidate weight files {[p.name for p in candidates]}; "
        "pass the one to convert as SRC"
    )


def load_state_dict(
    path: str | os.PathLike, use_ema: bool = True, widen_bfloat16: bool = True
) -> dict[str, np.ndarray]:
    """Load model weights as ``{parameter name: np.ndarray}`` from a torch or safetensors file.

    Args:
        path: one of
            * a ``.safetensors`` file, or a ``*.safetensors.index.json`` of a sharded one;
            * a torch zip-format ``.ckpt``/``.pt``/``.pth``/``.bin`` file: a reference training
              checkpoint or a plain state dict, reduced by :func:`select_generator_state_dict`;
            * a directory in one of the reference's layouts; which file in it holds the weights
              is decided by :func:`reference_weights` (e.g. the release
              layout ``config.json`` + ``diffusion_pytorch_model.safetensors``; the config is
              not read here).
        use_ema: for training checkpoints, prefer ``ema_state_dict`` (see
            :func:`select_generator_state_dict`; ``False`` = the reference's
            ``NOT_USE_EMA_MODEL``).
        widen_bfloat16: widen bfloat16 to float32 (exact; default), else keep
            ``ml_dtypes.bfloat16``.

    Returns:
        Arrays in torch layout (e.g. conv kernels ``(out, in, kt, kh, kw)``), C-contiguous, with
        the stored dtype except bfloat16, which is widened exactly to float32 by default.

    Raises:
        FileNotFoundError: ``path`` (or a file the layout needs) is missing.
        ValueError: unknown extension, several candidate weight files in a directory, legacy
            torch format, truncated/corrupt file, no usable state dict inside.
        CheckpointError: the torch pickle references a disallowed global (a ValueError).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        path = reference_weights(path)
    name = path.name.lower()
    if name.endswith(SAFETENSORS_INDEX_SUFFIX):
        return load_sharded_safetensors(path, widen_bfloat16)
    if name.endswith(SAFETENSORS_SUFFIX):
        return load_safetensors(path, widen_bfloat16)
    if path.suffix.lower() in TORCH_SUFFIXES:
        obj = load_torch_pickle(path, widen_bfloat16)
        return select_generator_state_dict(obj, use_ema=use_ema)
    raise ValueError(
        f"{path}: unknown checkpoint extension {path.suffix.lower()!r}; expected "
        f"{SAFETENSORS_SUFFIX}, {SAFETENSORS_INDEX_SUFFIX}, one of {', '.join(TORCH_SUFFIXES)}, "
        "or a checkpoint directory"
    )
