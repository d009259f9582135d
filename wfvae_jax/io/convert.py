"""Convert reference PyTorch WF-VAE checkpoints to a wfvae_jax EXPORT (config.json + params/).

The command is ``wfvae convert SRC OUT_DIR`` (:mod:`wfvae_jax.commands.convert`). SRC is any
layout a user of the reference has (:mod:`wfvae_jax.io.checkpoint` lists them): a release
directory (``config.json`` + ``diffusion_pytorch_model.safetensors``, or its sharded
``*.safetensors.index.json`` form), a directory with ``config.json`` and one ``*.ckpt``/``*.pt``/
``*.bin``, or one such file. Training ``.ckpt`` files (``train_ddp.py``, Open-Sora Plan,
MindSpeed-MM) give ``ema_state_dict`` (``module.`` removed), completed from the generator
``state_dict["gen_model"]`` where it lacks some (``--freeze_encoder``; named), or it alone;
a prefix all keys share (``module.``/``model.``/``vae.``/``ae.``) is removed and printed.
float16/bfloat16 weights become float32. No torch, no pickled code run (:mod:`.torch_zip`).

The config: ``--config`` (a config.json or a name from ``core.config.NAMED_CONFIGS``), else
the ``config.json`` next to the weights, else it is inferred from the state dict's names and
shapes (:func:`infer_config_fields`; ``--config infer`` forces that). The inferred architecture
is printed, and a given config that disagrees with it is an error listing every difference.
What the weights cannot tell (``t_interpolation``; ``scale``/``shift``) comes from the released
configs with a printed warning naming the flag (or command) that sets it.

Key mapping: our Flax modules mirror the reference's module tree, so a parameter path
``encoder/down1_1/conv1/kernel`` is the state-dict key ``encoder.down1.1.conv1.weight``; kernels are
transposed from ``(O, I, *k)`` to ``(*k, I, O)``; norm ``scale`` is ``weight``. The reference also
stores its fixed Haar kernels (``*wavelet_transform*``); they are checked against the expected
values (the 0.3536 / 0.5 literals) and not stored, since ours are constants.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from wfvae_jax.core import wavelets
from wfvae_jax.core.config import WFVAEConfig, get_config, level1_blocks
from wfvae_jax.io import checkpoint

# MindSpeed-MM's WF-VAE spells its encoder input transform ``wavelet_tranform_in``.
_WAVELET_KEY = re.compile(r"^(encoder|decoder)\.(inverse_)?wavelet_trans?form_\w+\.")
_HAAR3D_NAMES = ("h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v")
_HAAR2D_NAMES = ("aa", "ad", "da", "dd")

# Key prefixes that training wrappers put before ``encoder.``/``decoder.``: DDP (``module.``),
# Lightning / MindSpeed-style wrappers (``model.``), a VAE inside a larger model (``vae.``/``ae.``).
_PREFIXED_KEY = re.compile(r"^((?:module\.|model\.|vae\.|ae\.)*)(?:encoder|decoder)\.")

# The architecture fields the weights determine; everything else comes from a config or defaults.
ARCHITECTURE_FIELDS = (
    "base_channels",
    "latent_dim",
    "encoder_num_resblocks",
    "decoder_num_resblocks",
    "encoder_energy_flow_hidden_size",
    "decoder_energy_flow_hidden_size",
    "connect_res_layer_num",
    "use_attention",
    "norm_type",
    "l1_dowmsample_block",
    "l1_downsample_wavelet",
    "l2_dowmsample_block",
    "l2_downsample_wavelet",
    "l1_upsample_block",
    "l1_upsample_wavelet",
    "l2_upsample_block",
    "l2_upsample_wavelet",
)
_L2_BLOCKS = dict(
    l2_dowmsample_block="Spatial2xTime2x3DDownsample",
    l2_downsample_wavelet="HaarWaveletTransform3D",
    l2_upsample_block="Spatial2xTime2x3DUpsample",
    l2_upsample_wavelet="InverseHaarWaveletTransform3D",
)
# What the weights cannot tell, as in the released WF-VAE configs (WF-VAE-L-16Chn, Open-Sora Plan
# v1.3 and v1.5), with the flag that overrides it.
RELEASED_DEFAULTS = {"t_interpolation": ("trilinear", "--t_interpolation")}

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def flax_path_to_torch_key(path: tuple[str, ...]) -> str:
    """``("encoder", "down1_1", "conv1", "kernel")`` -> ``"encoder.down1.1.conv1.weight"``."""
    parts = []
    for p in path[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", p)
        parts.extend([m.group(1), m.group(2)] if m else [p])
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    return ".".join(parts + [leaf])


def _expected_wavelet(key: str) -> np.ndarray:
    """The reference's stored kernel ``(1, 1, 2, 2[, 2])`` for a ``*wavelet_transform*`` key."""
    if key.endswith(".conv.weight"):  # forward 3D: <kernel>_conv.conv.weight
        ndim, idx = 3, _HAAR3D_NAMES.index(key.split(".")[-3].removesuffix("_conv"))
    elif (name := key.rsplit(".", 1)[-1]) in _HAAR2D_NAMES:
        ndim, idx = 2, _HAAR2D_NAMES.index(name)
    else:
        ndim, idx = 3, _HAAR3D_NAMES.index(name)
    scale = wavelets.SCALE_2D if ndim == 2 else wavelets.REFERENCE_SCALE_3D
    return wavelets.haar_filters(ndim, scale)[idx][None, None]


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        return np.transpose(value, (*range(2, value.ndim), 1, 0))
    return value


# ---- config inference ---------------------------------------------------------------------


def strip_key_prefix(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, Any], str, list[str]]:
    """Removes the one prefix (of ``module.``/``model.``/``vae.``/``ae.``) before the VAE keys.

    Returns ``(state_dict, prefix, ignored)``: keys without the prefix are dropped when a prefix
    is found (e.g. a discriminator or text encoder saved alongside) and listed in ``ignored``.
    Raises ValueError if the ``encoder.``/``decoder.`` keys carry different prefixes.
    """
    prefixes = {m.group(1) for k in state_dict if (m := _PREFIXED_KEY.match(k))}
    if len(prefixes) > 1:
        raise ValueError(
            f"the state dict's encoder./decoder. keys carry different prefixes {sorted(prefixes)}; "
            "cannot tell which are the VAE's"
        )
    prefix = prefixes.pop() if prefixes else ""
    if not prefix:
        return dict(state_dict), "", []
    kept = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    ignored = sorted(k for k in state_dict if not k.startswith(prefix))
    return kept, prefix, ignored


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise KeyError(key)
    return tuple(np.shape(sd[key]))


def _count(sd: Mapping[str, Any], fmt: str, start: int) -> int:
    """How many consecutive ``fmt.format(i)`` keys exist for i = start, start + 1, ..."""
    i = start
    while fmt.format(i) in sd:
        i += 1
    return i - start


def _downsampler_rank(sd: Mapping[str, Any], prefix: str) -> int:
    """4 for a 2D (spatial) resampler conv ``PREFIX.conv.weight``, 5 for a 3D one
    (``PREFIX.conv.conv.weight``, a CausalConv3d)."""
    if f"{prefix}.conv.conv.weight" in sd:
        return len(_shape(sd, f"{prefix}.conv.conv.weight"))
    return len(_shape(sd, f"{prefix}.conv.weight"))


def infer_config_fields(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture (:data:`ARCHITECTURE_FIELDS`) of a reference state dict (unprefixed).

    Read from the reference's module tree (``modeling_wfvae.py``): ``base_channels`` from
    ``encoder.down1.0`` (24 -> base), ``latent_dim`` from ``encoder.conv_out`` (base*4 -> 2*latent),
    the energy-flow widths from ``encoder.connect_l1`` and ``decoder.connect_l2``, resblock counts
    from ``encoder.down1`` / ``decoder.up2``, ``connect_res_layer_num`` from ``decoder.connect_l2``,
    ``use_attention`` from ``encoder.mid.1.q``, ``norm_type`` from the norms' names (the reference
    wraps ``nn.LayerNorm`` as ``norm.norm.*``; ``nn.GroupNorm`` is ``norm.*``), and 4x vs 8x
    temporal compression from four places that must agree: ``encoder.connect_l1`` takes 12 (2D
    Haar) or 24 (3D Haar) channels, ``decoder.connect_l1`` gives 12 or 24, and level 1's
    down/upsampler convs are 2D or 3D.

    Raises:
      ValueError: the state dict lacks a key this needs (not a WF-VAE, or another module naming)
        or its shapes contradict each other; the message names the key.
    """
    sd = state_dict
    try:
        fields = _infer(sd)
    except KeyError as e:
        sample = sorted(sd)[:4]
        raise ValueError(
            f"cannot infer the WF-VAE architecture: the state dict has no {e.args[0]!r} "
            f"({len(sd)} keys, e.g. {sample}); pass --config with the model's config.json"
        ) from None
    return fields


def _infer(sd: Mapping[str, Any]) -> dict[str, Any]:
    problems = []
    if "encoder.norm_out.norm.weight" in sd:
        norm_type = "layernorm"
    elif "encoder.norm_out.weight" in sd:
        norm_type = "groupnorm"
    else:
        raise KeyError("encoder.norm_out.norm.weight")
    conv_in = _shape(sd, "encoder.down1.0.weight")  # (base, 24, 3, 3)
    base = conv_in[0]
    if conv_in[1] != 24:
        problems.append(f"encoder.down1.0 takes {conv_in[1]} channels, not 24 (3D Haar of RGB)")
    moments = _shape(sd, "encoder.conv_out.conv.weight")[0]  # 2 * latent_dim
    latent = moments // 2
    dec_latent = _shape(sd, "decoder.conv_in.conv.weight")[1]
    if moments % 2 or dec_latent != latent:
        problems.append(
            f"encoder.conv_out gives {moments} channels but decoder.conv_in takes {dec_latent}"
        )
    enc_l1 = _shape(sd, "encoder.connect_l1.weight")  # (enc_ef, 12 or 24, 3, 3)
    enc_ef = enc_l1[0]
    enc_n = _count(sd, "encoder.down1.{}.conv1.weight", 1)
    enc_n2 = _count(sd, "encoder.down2.{}.conv1.conv.weight", 1)
    if enc_n2 != enc_n:
        problems.append(f"encoder.down1 has {enc_n} resblocks but encoder.down2 has {enc_n2}")
    connect = _count(sd, "decoder.connect_l2.{}.conv1.conv.weight", 0)
    connect1 = _count(sd, "decoder.connect_l1.{}.conv1.conv.weight", 0)
    if connect1 != connect:
        problems.append(f"decoder.connect_l1 has {connect1} resblocks, connect_l2 {connect}")
    dec_ef = _shape(sd, f"decoder.connect_l2.{connect}.weight")[1]
    dec_l1_out = _shape(sd, f"decoder.connect_l1.{connect}.weight")[0]
    dec_n = _count(sd, "decoder.up2.{}.conv1.conv.weight", 0)
    use_attention = "encoder.mid.1.q.conv.weight" in sd
    if ("decoder.mid.1.q.conv.weight" in sd) != use_attention:
        problems.append("attention is in one of encoder.mid / decoder.mid but not the other")
    # 4x or 8x: each piece of evidence votes.
    votes = {
        "encoder.connect_l1 input channels": {12: 4, 24: 8}.get(enc_l1[1]),
        "decoder.connect_l1 output channels": {12: 4, 24: 8}.get(dec_l1_out),
        "encoder.down1 downsampler": {4: 4, 5: 8}.get(
            _downsampler_rank(sd, f"encoder.down1.{enc_n + 1}")
        ),
        "decoder.up1 upsampler": {4: 4, 5: 8}.get(_downsampler_rank(sd, f"decoder.up1.{dec_n}")),
    }
    if len(set(votes.values())) != 1 or None in votes.values():
        said = ", ".join(f"{k} -> {'?' if v is None else f'{v}x'}" for k, v in votes.items())
        problems.append(f"temporal compression is ambiguous: {said}")
    if problems:
        raise ValueError("inconsistent WF-VAE state dict: " + "; ".join(problems))
    temporal = next(iter(votes.values()))
    return dict(
        base_channels=base,
        latent_dim=latent,
        encoder_num_resblocks=enc_n,
        decoder_num_resblocks=dec_n,
        encoder_energy_flow_hidden_size=enc_ef,
        decoder_energy_flow_hidden_size=dec_ef,
        connect_res_layer_num=connect,
        use_attention=use_attention,
        norm_type=norm_type,
        **level1_blocks(temporal),
        **_L2_BLOCKS,
    )


def config_differences(config: WFVAEConfig | Mapping[str, Any], inferred: Mapping[str, Any]):
    """``["base_channels: 32 in the config, 16 in the weights", ...]`` over the inferred fields."""
    get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k)
    return [
        f"{k}: {get(k)!r} in the config, {v!r} in the weights"
        for k, v in inferred.items()
        if get(k) != v
    ]


def format_fields(fields: Mapping[str, Any]) -> str:
    """One line per group of the inferred architecture, for printing."""
    t = 8 if fields["l1_dowmsample_block"] == level1_blocks(8)["l1_dowmsample_block"] else 4
    return (
        f"  base_channels={fields['base_channels']} latent_dim={fields['latent_dim']} "
        f"norm_type={fields['norm_type']} use_attention={fields['use_attention']}\n"
        f"  encoder_num_resblocks={fields['encoder_num_resblocks']} "
        f"decoder_num_resblocks={fields['decoder_num_resblocks']} "
        f"connect_res_layer_num={fields['connect_res_layer_num']}\n"
        f"  encoder_energy_flow_hidden_size={fields['encoder_energy_flow_hidden_size']} "
        f"decoder_energy_flow_hidden_size={fields['decoder_energy_flow_hidden_size']}\n"
        f"  temporal compression {t}x: l1_dowmsample_block={fields['l1_dowmsample_block']} "
        f"l1_upsample_block={fields['l1_upsample_block']}"
    )


# ---- state dict -> params -----------------------------------------------------------------


def _summary(kind: str, items: list[str]) -> str:
    return f"{len(items)} {kind} (first: {items[0]})"


def torch_state_dict_to_params(
    state_dict: Mapping[str, np.ndarray], config: WFVAEConfig
) -> dict[str, Any]:
    """Maps a reference state dict to our params pytree (float32 numpy arrays).

    Any float dtype (float16, bfloat16, float64) is converted to float32.
    Raises:
      ValueError: listing every missing key, unexpected key and shape mismatch (a config that
        does not match the checkpoint shows up here), or a stored Haar kernel that is not the
        reference's fixed value. The first line summarises; the full lists follow.
    """
    flat = flatten_dict(checkpoint.param_template(config))
    expected = {flax_path_to_torch_key(p): p for p in flat}
    missing, mismatched, bad_wavelets = [], [], []
    out = {}
    for key, path in expected.items():
        if key not in state_dict:
            missing.append(key)
            continue
        want = tuple(flat[path].shape)
        if np.ndim(state_dict[key]) != len(want):  # a rank the model's layer cannot take
            mismatched.append(
                f"{key}: checkpoint rank {np.ndim(state_dict[key])} {np.shape(state_dict[key])}"
                f" vs model rank {len(want)}"
            )
            continue
        value = _to_flax(np.asarray(state_dict[key], np.float32), path[-1])
        if value.shape != tuple(flat[path].shape):
            mismatched.append(f"{key}: checkpoint {value.shape} vs model {tuple(flat[path].shape)}")
            continue
        out[path] = value
    unexpected = []
    for key, value in state_dict.items():
        if key in expected:
            continue
        if _WAVELET_KEY.match(key):
            try:
                # A float16/bfloat16 checkpoint holds the kernels rounded to its dtype.
                want = _expected_wavelet(key).astype(value.dtype).astype(np.float64)
                ok = np.allclose(np.asarray(value, np.float64), want, atol=1e-6)
            except (ValueError, IndexError, TypeError):
                ok = False
            if not ok:
                bad_wavelets.append(key)
            continue
        unexpected.append(key)
    problems, details = [], []
    for kind, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("Haar kernels that differ from the reference's fixed values", bad_wavelets),
    ):
        if items:
            problems.append(_summary(kind, items))
            details.append(f"{kind} ({len(items)}): {items}")
    if problems:
        raise ValueError(
            "checkpoint does not match the WF-VAE config "
            f"(base_channels={config.base_channels}, latent_dim={config.latent_dim}, "
            f"norm_type={config.norm_type}, num_resblocks={config.encoder_num_resblocks}/"
            f"{config.decoder_num_resblocks}, connect_res_layer_num={config.connect_res_layer_num}"
            "): " + "; ".join(problems) + "\n  " + "\n  ".join(details)
        )
    return unflatten_dict(out)


def describe_filled(filled: list[str]) -> str:
    """The line telling a user which parameters came from ``state_dict.gen_model`` because the
    EMA lacked them (``torch_files.generator_entry``'s ``filled``); ``""`` when only the fixed
    Haar kernels did (every EMA lacks those: they are not trained)."""
    params = [k for k in filled if not _WAVELET_KEY.match(k)]
    if not params:
        return ""
    groups = collections.Counter(key.split(".", 1)[0] for key in params)  # in first-seen order
    parts = ", ".join(f"{top}.* ({n})" for top, n in groups.items())
    return (
        f"ema_state_dict lacks {len(params)} parameters (not trained in that run, e.g. "
        f"--freeze_encoder); taken from state_dict.gen_model: {parts}; first: {params[0]}"
    )


def _read_state_dict(
    files: checkpoint.ReferenceFiles, use_ema: bool, report: Report
) -> dict[str, np.ndarray]:
    from wfvae_jax.io import torch_files
    from wfvae_jax.io.torch_zip import load_torch_pickle

    weights = files.weights
    if weights.suffix.lower() in torch_files.TORCH_SUFFIXES:
        obj = load_torch_pickle(weights, widen_bfloat16=False)
        entry = torch_files.generator_entry(obj, use_ema=use_ema)
        sd = entry.state_dict
        report(f"weights: {weights} ({entry.source})")
        filled = describe_filled(entry.filled)
        if filled:
            report(filled)
    else:
        sd = torch_files.load_state_dict(weights, widen_bfloat16=False)
        report(f"weights: {weights}")
    sd, prefix, ignored = strip_key_prefix(sd)
    if prefix:
        report(f"stripped the key prefix {prefix!r} from {len(sd)} keys")
    if ignored:
        report(f"ignored {len(ignored)} keys without that prefix, e.g. {ignored[:3]}")
    dtypes = sorted(
        {str(v.dtype) for v in sd.values() if v.dtype.kind == "f" or v.dtype.name == "bfloat16"}
    )
    if dtypes != ["float32"]:
        report(f"weights stored as {'/'.join(dtypes)}; converted to float32 parameters")
    return sd


def _given_config(config: WFVAEConfig | str | None, files: checkpoint.ReferenceFiles):
    """``(config or None, where)`` from the ``config`` argument or the config.json beside SRC."""
    if isinstance(config, WFVAEConfig):
        return config, "the given config"
    if config == "infer":
        return None, "inferred"
    if isinstance(config, str):
        if config.endswith(".json"):
            if not os.path.isfile(config):
                raise FileNotFoundError(f"--config {config} does not exist")
            return WFVAEConfig.from_json(config), config
        return get_config(config), f"named config {config!r}"
    if files.config is not None:
        return WFVAEConfig.from_json(files.config), str(files.config)
    return None, "inferred"


def load_reference(
    src: str | os.PathLike,
    config: WFVAEConfig | str | None = None,
    use_ema: bool = True,
    t_interpolation: str | None = None,
    report: Report | None = None,
) -> tuple[dict[str, Any], WFVAEConfig]:
    """Reads a reference checkpoint (see the module docstring) -> (params, config).

    Args:
      src: a reference directory or weights file (``wfvae_jax.io.checkpoint.locate_reference``).
      config: a :class:`WFVAEConfig`, a config.json path, a named config, ``"infer"`` (ignore
        any config.json), or None (the config.json beside the weights, else inferred).
      use_ema: for training checkpoints, prefer ``ema_state_dict``.
      t_interpolation: overrides the config's (``"trilinear"`` or ``"nearest"``).
      report: called with each line worth telling a user (what was read, the inferred config,
        warnings); default silent.
    Raises:
      FileNotFoundError: ``src`` (or a file its layout needs) does not exist.
      ValueError: a corrupt or unsafe file, several candidate weight files, a config that
        disagrees with the weights (every difference listed), a state dict whose architecture
        cannot be inferred, or keys that do not match the config.
    """
    report = report or _quiet
    files = checkpoint.locate_reference(src)
    sd = _read_state_dict(files, use_ema, report)
    given, where = _given_config(config, files)
    try:
        inferred = infer_config_fields(sd)
    except ValueError:
        if given is None:
            raise
        inferred = None  # the key-by-key check below reports what does not match
    if given is not None:
        if inferred is not None:
            diffs = config_differences(given, inferred)
            if diffs:
                raise ValueError(
                    f"the config ({where}) disagrees with the weights in {files.weights}: "
                    + "; ".join(diffs)
                    + ". Fix the config, or pass --config infer to use the weights' architecture"
                )
        cfg = given
        report(f"config: {where}" + (" (matches the weights)" if inferred is not None else ""))
    else:
        report(f"config inferred from the weights of {files.weights}:\n" + format_fields(inferred))
        defaults = {}
        for field, (value, flag) in RELEASED_DEFAULTS.items():
            if field == "t_interpolation" and t_interpolation is not None:
                continue
            defaults[field] = value
            report(
                f"warning: {field} is not stored in the weights; using {value!r} as the released "
                f"WF-VAE configs do (override with {flag})"
            )
        report(
            "warning: scale/shift (latent normalisation) are not stored in the weights; the "
            "config gets the reference's placeholders (measure them with python -m "
            "wfvae_jax.commands.latent_stats --checkpoint OUT_DIR --write_config)"
        )
        cfg = WFVAEConfig.from_dict({**inferred, **defaults})
    if t_interpolation is not None and t_interpolation != cfg.t_interpolation:
        cfg = cfg.replace(t_interpolation=t_interpolation)
    return torch_state_dict_to_params(sd, cfg), cfg


def params_to_torch_state_dict(params: Any) -> dict[str, np.ndarray]:
    """Inverse of :func:`torch_state_dict_to_params` (without the fixed Haar kernels).

    Gives the reference's key names and ``(O, I, *k)`` kernel layout, e.g. to load weights
    trained here into the PyTorch reference.
    """
    out = {}
    for path, value in flatten_dict(params).items():
        v = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            v = np.transpose(v, (v.ndim - 1, v.ndim - 2, *range(v.ndim - 2)))
        out[flax_path_to_torch_key(path)] = np.ascontiguousarray(v)
    return out
