"""The device mesh of training and inference, and spatial sharding: one video split over devices
along its height, exactly.

One mesh builder (:func:`make_mesh`) for every use: axes ``("data", "fsdp", "space")``. A batch is
split over ``"data"`` and ``"fsdp"`` (:data:`BATCH_AXES`); training splits its state over
``"fsdp"`` (``wfvae_jax.train.mesh``); ``"space"`` splits each video's height. Parameters are
copied to every device with :func:`replicate`. :func:`wfvae_jax.encode` and
:func:`wfvae_jax.decode` take ``mesh=``: the video / latent is placed with
:func:`activation_sharding` (batch over the batch axes, H over ``"space"``) and the output stays
sharded the same way. Every activation inside the model is split the same way, so per-device
activation memory falls as ``1 / space``; the parameters (replicated) and weight-sized
temporaries stay; see the README's "Spatial sharding" table (``benchmarks/sharding.py``).

How, and why it is exact
- Layers know nothing of meshes. While the model is traced, :func:`constrain` installs a Flax
  method interceptor (``flax.linen.intercept_methods``) that puts a sharding constraint on every
  ``(B, T, H, W, C)`` array a module returns, Causal Cache entries included (so the ``lax.scan``
  carry of chunked inference is sharded too). XLA's SPMD partitioner then splits the work:
- 3x3 convolutions exchange one-row halos with the neighbouring devices (collective-permute);
  the Haar transforms (stride-2, kernel 2) and nearest/linear 2x upsampling are local or need a
  one-row halo; LayerNorm is per position (over C): all local, the same arithmetic.
- GroupNorm (``norm_type="groupnorm"``) reduces over (T, H, W): XLA computes per-device partial
  sums and all-reduces them, so the statistics are exact up to float summation order (~1e-7
  relative). It is therefore allowed; only Causal Cache chunking refuses it (over time).
- The mid-block's per-frame spatial attention (``AttnBlock3DFix``) keeps its queries split over
  H and all-gathers keys and values of one frame: a softmax row sees every key, so the result is
  exact; per-device logits are ``(B*T, H*W/space, H*W)`` at the latent resolution (H/8).
Results equal single-device inference within float rounding (tests/test_sharding.py: < 1e-5).

Axis types: this module relies on GSPMD's propagation (``AxisType.Auto``); a mesh made with
``jax.make_mesh`` (Explicit axes by default) is used through an Auto copy over the same devices.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "space")
BATCH_AXES = ("data", "fsdp")  # a batch is split over both (fsdp also splits training's state)
FLAG_AXES = ("data", "space")  # what --mesh sets (inference: fsdp is training's)
MESH_HELP = (
    "device mesh 'data=D,space=S': split the batch over D devices and each video's height over "
    "S devices (D*S devices, the first D*S of jax.devices()); e.g. space=4"
)


def make_mesh(
    data: int | None = None,
    space: int = 1,
    *,
    fsdp: int = 1,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A ``(data, fsdp, space)`` mesh with axes :data:`AXES` over the first
    ``data * fsdp * space`` devices of ``devices`` (default ``jax.devices()``: every process's).

    ``data=None`` puts every device on ``"data"`` that ``fsdp * space`` leaves, which must then
    divide the device count (training: ``make_mesh(fsdp=F)``).
    Raises:
      ValueError: a size below 1, more devices asked for than there are, or ``fsdp * space`` not
        dividing the devices for ``data=None``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or space < 1 or (data is not None and data < 1):
        raise ValueError(f"mesh sizes must be >= 1, got data={data}, fsdp={fsdp}, space={space}")
    if data is None:
        if len(devices) % (fsdp * space):
            raise ValueError(
                f"mesh fsdp={fsdp}, space={space}: fsdp * space must divide the "
                f"{len(devices)} devices"
            )
        data = len(devices) // (fsdp * space)
    n = data * fsdp * space
    if n > len(devices):
        raise ValueError(
            f"mesh data={data},space={space}"
            + (f",fsdp={fsdp}" if fsdp > 1 else "")
            + f" needs {n} devices, only {len(devices)} available (on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)"
        )
    grid = np.asarray(devices[:n], dtype=object).reshape(data, fsdp, space)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=2,space=4"`` -> ``{"data": 2, "space": 4}``; a missing axis is 1.

    Raises:
      ValueError: malformed text, an unknown axis name, a repeated axis, or a size below 1.
    """
    sizes = {"data": 1, "space": 1}
    seen: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\w+)\s*=\s*(-?\d+)", part)
        if not m:
            raise ValueError(f"bad mesh {spec!r}: expected 'data=D,space=S', e.g. 'space=4'")
        name, size = m.group(1), int(m.group(2))
        if name not in FLAG_AXES:
            raise ValueError(f"unknown mesh axis {name!r} in {spec!r}; axes are 'data', 'space'")
        if name in seen:
            raise ValueError(f"mesh axis {name!r} given twice in {spec!r}")
        if size < 1:
            raise ValueError(f"mesh axis {name}={size} must be >= 1")
        seen.add(name)
        sizes[name] = size
    return sizes


def mesh_from_arg(spec: str | None) -> Mesh | None:
    """The mesh for a ``--mesh data=D,space=S`` flag value (``None`` or ``""``: no mesh)."""
    if not spec:
        return None
    return make_mesh(**parse_mesh(spec))


def add_mesh_arg(parser: argparse.ArgumentParser | Any) -> None:
    """Adds ``--mesh data=D,space=S`` (default: none, one device) to a parser or group."""
    parser.add_argument("--mesh", default=None, metavar="data=D,space=S", help=MESH_HELP)


def check_mesh(mesh: Mesh) -> Mesh:
    """Validates ``mesh``'s axis names; returns it with Auto axis types (see module docstring).

    Raises:
      ValueError: an axis other than ``"data"`` / ``"fsdp"`` / ``"space"``.
    """
    unknown = [a for a in mesh.axis_names if a not in AXES]
    if unknown:
        raise ValueError(
            f"unknown mesh axis {unknown[0]!r} (mesh axes {tuple(mesh.axis_names)}); WF-VAE "
            f"uses 'data' and 'fsdp' (batch) and 'space' (height)"
        )
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def axis_size(mesh: Mesh | None, name: str) -> int:
    """Devices along axis ``name`` (1 when the mesh lacks it or there is no mesh)."""
    return 1 if mesh is None or name not in mesh.axis_names else int(mesh.shape[name])


def batch_size_divisor(mesh: Mesh | None) -> int:
    """Devices a batch is split over: the product of the mesh's :data:`BATCH_AXES` sizes."""
    return axis_size(mesh, "data") * axis_size(mesh, "fsdp")


def batch_spec(mesh: Mesh) -> str | tuple[str, ...] | None:
    """The ``PartitionSpec`` entry of a batch axis: the :data:`BATCH_AXES` the mesh has."""
    names = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return names[0] if len(names) == 1 else (names or None)


def activation_spec(mesh: Mesh) -> P:
    """``(B, T, H, W, C)`` split: B over the batch axes, H over ``"space"`` (axes the mesh has)."""
    return P(batch_spec(mesh), None, "space" if "space" in mesh.axis_names else None)


def activation_sharding(mesh: Mesh) -> NamedSharding:
    """The :class:`NamedSharding` of videos, latents and activations ``(B, T, H, W, C)``."""
    return NamedSharding(mesh, activation_spec(mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` (e.g. params) copied to every device of ``mesh``; do it once for many calls.

    Every process of a multi-process mesh passes the same values. Already-placed arrays are not
    copied again; ``jax.ShapeDtypeStruct`` leaves (AOT lowering) get the sharding attached;
    under an outer ``jax.jit`` it acts as a sharding constraint.
    """
    sharding = replicated(check_mesh(mesh))
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def check_input(shape: Sequence[int], mesh: Mesh, what: str, downsample: int) -> None:
    """Checks that a ``(B, T, H, W, C)`` input splits evenly over ``mesh``.

    ``downsample`` is how much the model shrinks H below this input (8 for a video, 1 for a
    latent), so that every level's height splits evenly.
    Raises:
      ValueError: B not divisible by the ``"data"`` size, or H not by ``downsample * space``
        (the message names the nearest heights that work).
    """
    b, h = shape[0], shape[2]
    d, s = batch_size_divisor(mesh), axis_size(mesh, "space")
    if b % d:
        axes = f"data={d}" if axis_size(mesh, "fsdp") == 1 else f"data*fsdp={d}"
        raise ValueError(
            f"{what} batch {b} is not divisible by the mesh's {axes} devices; "
            f"use a batch that is a multiple of {d} (pad it) or a smaller 'data' axis"
        )
    step = downsample * s
    if h % step:
        lo, hi = h // step * step, (h // step + 1) * step
        rule = f"{downsample} * space={s} = {step}" if downsample > 1 else f"space={s}"
        raise ValueError(
            f"{what} height H={h} must be divisible by {rule} to "
            f"split over {s} devices; use H={hi}"
            + (f" or H={lo}" if lo else "")
            + ", or fewer 'space' devices"
        )


def _is_activation(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.core.Tracer) and x.ndim == 5


@contextlib.contextmanager
def constrain(mesh: Mesh | None) -> Iterator[None]:
    """While tracing a WF-VAE apply, constrain every module's ``(B, T, H, W, C)`` outputs to
    :func:`activation_sharding` (a no-op context for ``mesh=None``).

    Only arrays whose B and H split evenly are constrained (validated inputs make that all of
    them). This is the model-boundary hook that keeps ``wfvae_jax.core.layers`` free of mesh names.
    """
    if mesh is None:
        yield
        return
    sharding = activation_sharding(mesh)
    d, s = batch_size_divisor(mesh), axis_size(mesh, "space")

    def put(x: Any) -> Any:
        if _is_activation(x) and x.shape[0] % d == 0 and x.shape[2] % s == 0:
            return jax.lax.with_sharding_constraint(x, sharding)
        return x

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "setup":
            return out
        return jax.tree.map(put, out)

    with nn.intercept_methods(interceptor):
        yield


def _put(x: Any, sharding: NamedSharding) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):  # AOT lowering: only the layout is needed
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    if sharding.is_fully_addressable or isinstance(x, jax.core.Tracer):
        return jax.device_put(x, sharding)
    host = np.asarray(x)  # other processes' devices: each fills its own from the same values
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(params: Any, x: Any, mesh: Mesh, what: str, downsample: int) -> tuple[Mesh, Any, Any]:
    """Validates and places one call's inputs: ``(auto_mesh, replicated params, sharded x)``.

    ``x`` is a video (``downsample=8``) or a latent (``downsample=1``), ``(B, T, H, W, C)``.
    Already-placed arrays are not copied again; ``jax.ShapeDtypeStruct`` leaves (for AOT
    lowering) get the shardings attached; under an outer ``jax.jit`` placing acts as a
    sharding constraint.
    Raises:
      ValueError: from :func:`check_mesh` and :func:`check_input`.
    """
    mesh = check_mesh(mesh)
    check_input(np.shape(x), mesh, what, downsample)
    return mesh, replicate(params, mesh), _put(x, activation_sharding(mesh))
