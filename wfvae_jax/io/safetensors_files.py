"""Read safetensors weights: one ``.safetensors`` file, or a sharded checkpoint's index.

A sharded checkpoint is a ``*.safetensors.index.json`` (``{"weight_map": {name: shard file}}``,
as diffusers/transformers write with ``max_shard_size``) and the shard files next to it. Tensors
are read with ``safetensors.numpy``; bfloat16 is widened to float32 unless asked not to
(:func:`wfvae_jax.io.weight_files.widen`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from wfvae_jax.io.weight_files import INCOMPLETE_HINT, widen


def load_safetensors(path: str | os.PathLike, widen_bfloat16: bool = True) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file (bfloat16 widened to float32 unless
    ``widen_bfloat16=False``).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a readable safetensors file (truncated, corrupt, or another
        format); the message names the file and suggests an incomplete download.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} does not exist")
    try:
        tensors = load_file(path)
    except SafetensorError as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}); {INCOMPLETE_HINT}"
        ) from e
    return {k: widen(v) for k, v in tensors.items()} if widen_bfloat16 else tensors


def load_sharded_safetensors(
    index: str | os.PathLike, widen_bfloat16: bool = True
) -> dict[str, np.ndarray]:
    """Tensors of a sharded safetensors checkpoint, from its ``*.safetensors.index.json``.

    The index's ``weight_map`` maps each tensor name to a shard file in the index's directory
    (the layout diffusers' and transformers' ``save_pretrained(max_shard_size=...)`` write).

    Raises:
      FileNotFoundError: the index or any shard it names is missing (all missing ones listed).
      ValueError: the index is not valid JSON with a ``weight_map``, names a shard outside its
        directory, or a shard lacks a tensor the index puts there; a corrupt shard.
    """
    index = Path(index)
    if not index.is_file():
        raise FileNotFoundError(f"safetensors index {index} does not exist")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{index} is not a safetensors index (JSON with a 'weight_map'): {e}; {INCOMPLETE_HINT}"
        ) from e
    shards = sorted(set(weight_map.values()))
    bad = [s for s in shards if Path(s).name != s]
    if bad:
        raise ValueError(f"{index} names shard files outside its directory: {bad}")
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{index} names {len(missing)} shard file(s) missing from {index.parent}: {missing} "
            "(an incomplete download?)"
        )
    out: dict[str, np.ndarray] = {}
    for shard in shards:
        tensors = load_safetensors(index.parent / shard, widen_bfloat16)
        lacking = sorted(k for k, v in weight_map.items() if v == shard and k not in tensors)
        if lacking:
            raise ValueError(f"{index}: shard {shard} lacks tensors the index lists: {lacking}")
        out.update(tensors)
    return out


def index_shards(index: Path) -> set[str]:
    """The shard file names a ``*.safetensors.index.json`` lists; empty for an unreadable index
    (:func:`load_sharded_safetensors` reports what is wrong with it)."""
    try:
        return set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return set()  # a broken index is reported when it is read
