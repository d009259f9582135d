"""Metric network weights as flat ``{"a/b/c": array}`` maps (the safetensors layout) and back,
with a layout check against the network's expected tree (LPIPS, I3D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten nested dicts of arrays to ``{"a/b/c": np.ndarray}`` (the safetensors layout)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, path + "/"))
        else:
            flat[path] = np.ascontiguousarray(np.asarray(value))
    return flat


def unflatten_tree(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of :func:`flatten_tree`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def check_tree_shapes(got: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    """Raise ValueError naming every missing, unexpected or misshapen leaf.

    ``expected`` leaves may be arrays or ``jax.ShapeDtypeStruct`` (anything with ``.shape``).
    """
    got_flat = _flatten_shapes(got)
    exp_shapes = {k: tuple(v.shape) for k, v in _flatten_shapes(expected).items()}
    missing = sorted(set(exp_shapes) - set(got_flat))
    extra = sorted(set(got_flat) - set(exp_shapes))
    wrong = sorted(
        f"{k}: {got_flat[k].shape} (expected {exp_shapes[k]})"
        for k in set(exp_shapes) & set(got_flat)
        if tuple(got_flat[k].shape) != exp_shapes[k]
    )
    if missing or extra or wrong:
        raise ValueError(
            f"{what} does not match the expected layout; missing: {missing[:8]}, "
            f"unexpected: {extra[:8]}, wrong shape: {wrong[:8]}"
        )


def _flatten_shapes(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_shapes(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
