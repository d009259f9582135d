"""WF-VAE model configuration, field for field the reference's ``WFVAEModel`` constructor.

Source: reference ``causalvideovae/model/vae/modeling_wfvae.py`` (``WFVAEModel.__init__``); a
released ``config.json`` maps 1:1 onto :class:`WFVAEConfig` (see :meth:`WFVAEConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# The block/wavelet choices the released WF-VAE checkpoints use, per field. The level-1 fields
# go together: one of ``_L1_VARIANTS`` (checked in ``__post_init__``).
_SUPPORTED = {
    "l1_dowmsample_block": ("Downsample", "Spatial2xTime2x3DDownsample"),
    "l1_downsample_wavelet": ("HaarWaveletTransform2D", "HaarWaveletTransform3D"),
    "l2_dowmsample_block": ("Spatial2xTime2x3DDownsample",),
    "l2_downsample_wavelet": ("HaarWaveletTransform3D",),
    "l1_upsample_block": ("Upsample", "Spatial2xTime2x3DUpsample"),
    "l1_upsample_wavelet": ("InverseHaarWaveletTransform2D", "InverseHaarWaveletTransform3D"),
    "l2_upsample_block": ("Spatial2xTime2x3DUpsample",),
    "l2_upsample_wavelet": ("InverseHaarWaveletTransform3D",),
    "attention_type": ("AttnBlock3DFix",),
    "norm_type": ("layernorm", "groupnorm"),
    "t_interpolation": ("trilinear", "nearest"),
}
_L1_FIELDS = (
    "l1_dowmsample_block",
    "l1_downsample_wavelet",
    "l1_upsample_block",
    "l1_upsample_wavelet",
)
# temporal_downsample -> the level-1 (block, wavelet, block, wavelet) in ``_L1_FIELDS`` order.
# 4: level 1 is spatial only (WF-VAE-S/M/L, Open-Sora Plan v1.3); 8: level 1 also halves time
# (the reference's 8x8x8 variant, Open-Sora Plan v1.5's WF-VAE-M; not described in the paper).
# The reference derives its level-1 widths and ``temporal_uptimes`` from the block names alone;
# a mix of the two rows does not build or run there, so it is rejected here.
# Source: reference ``modeling_wfvae.py`` (``Encoder``/``Decoder`` "For temporal usage",
# ``WFVAEModel.__init__`` ``temporal_uptimes``).
_L1_VARIANTS = {
    4: ("Downsample", "HaarWaveletTransform2D", "Upsample", "InverseHaarWaveletTransform2D"),
    8: (
        "Spatial2xTime2x3DDownsample",
        "HaarWaveletTransform3D",
        "Spatial2xTime2x3DUpsample",
        "InverseHaarWaveletTransform3D",
    ),
}
# Keys diffusers writes into config.json that are not constructor arguments, and the LC-VAE
# settings an exported LC-VAE carries (``"lc"``, read by ``checkpoint.load_lc_settings``).
_IGNORED_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "lc")


@dataclasses.dataclass(frozen=True)
class WFVAEConfig:
    """Hyper-parameters of a WF-VAE; names and defaults follow the reference constructor.

    Note the reference's spelling ``l1_dowmsample_block``/``l2_dowmsample_block`` is kept so that a
    released config.json loads unchanged. ``scale``/``shift`` are the latent normalisation for
    diffusion users (the reference ships 4-entry placeholders; ``wfvae latent-stats``
    measures real per-channel values).

    Two temporal variants (``temporal_downsample``): 4 (the defaults; videos ``T = 1 + 4k``) and
    8, the 8x8x8 variant (``l1_dowmsample_block="Spatial2xTime2x3DDownsample"``,
    ``l1_downsample_wavelet="HaarWaveletTransform3D"``, ``l1_upsample_block=
    "Spatial2xTime2x3DUpsample"``, ``l1_upsample_wavelet="InverseHaarWaveletTransform3D"``; videos
    ``T = 1 + 8k``). The four level-1 fields must name the same variant.

    Raises:
      ValueError: an unsupported block/wavelet/norm name, a mix of the 4x and 8x level-1 fields
        (naming the fields), a non-positive width or count, or a groupnorm width not divisible
        by 32.
    """

    latent_dim: int = 8
    base_channels: int = 128
    encoder_num_resblocks: int = 2
    encoder_energy_flow_hidden_size: int = 64
    decoder_num_resblocks: int = 2
    decoder_energy_flow_hidden_size: int = 128
    attention_type: str = "AttnBlock3DFix"
    use_attention: bool = True
    dropout: float = 0.0
    norm_type: str = "groupnorm"
    t_interpolation: str = "nearest"
    connect_res_layer_num: int = 1
    scale: tuple[float, ...] = (0.18215, 0.18215, 0.18215, 0.18215)
    shift: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    l1_dowmsample_block: str = "Downsample"
    l1_downsample_wavelet: str = "HaarWaveletTransform2D"
    l2_dowmsample_block: str = "Spatial2xTime2x3DDownsample"
    l2_downsample_wavelet: str = "HaarWaveletTransform3D"
    l1_upsample_block: str = "Upsample"
    l1_upsample_wavelet: str = "InverseHaarWaveletTransform2D"
    l2_upsample_block: str = "Spatial2xTime2x3DUpsample"
    l2_upsample_wavelet: str = "InverseHaarWaveletTransform3D"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "shift", tuple(float(s) for s in self.shift))
        for key, allowed in _SUPPORTED.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} is not supported; expected one of {allowed}"
                )
        l1 = tuple(getattr(self, k) for k in _L1_FIELDS)
        if l1 not in _L1_VARIANTS.values():
            got = ", ".join(f"{k}={v!r}" for k, v in zip(_L1_FIELDS, l1, strict=True))
            raise ValueError(
                f"inconsistent level-1 blocks: {got}. The four level-1 fields name one variant: "
                f"4x temporal {_L1_VARIANTS[4]} or 8x temporal {_L1_VARIANTS[8]} (in that order)"
            )
        for key in (
            "latent_dim",
            "base_channels",
            "encoder_num_resblocks",
            "decoder_num_resblocks",
            "encoder_energy_flow_hidden_size",
            "decoder_energy_flow_hidden_size",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.connect_res_layer_num < 0:
            raise ValueError(
                f"connect_res_layer_num must be >= 0, got {self.connect_res_layer_num}"
            )
        if self.norm_type == "groupnorm":
            for key in (
                "base_channels",
                "encoder_energy_flow_hidden_size",
                "decoder_energy_flow_hidden_size",
            ):
                if getattr(self, key) % 32:
                    raise ValueError(f"groupnorm uses 32 groups: {key} must be divisible by 32")

    # ---- The frame-count rule: the one place that knows how T maps to latent frames. ----

    @property
    def temporal_downsample(self) -> int:
        """Video frames per latent frame after the first: 4, or 8 when level 1 also halves time.

        Source: reference ``WFVAEModel.__init__`` (``temporal_uptimes``).
        """
        return 8 if self.l1_dowmsample_block == _L1_VARIANTS[8][0] else 4

    @property
    def spatial_downsample(self) -> int:
        """Pixels per latent position along H and W (always 8)."""
        return 8

    def is_valid_num_frames(self, t: int) -> bool:
        """Whether ``t`` video frames have the causal form ``1 + k * temporal_downsample``."""
        return t >= 1 and (t - 1) % self.temporal_downsample == 0

    def nearest_num_frames(self, t: int) -> int:
        """The nearest valid video frame count ``1 + k * temporal_downsample`` (ties go down)."""
        return nearest_valid_num_frames(t, self.temporal_downsample)

    def check_num_frames(self, t: int, what: str = "video") -> None:
        """Raises ValueError unless ``t`` is ``1 + k * temporal_downsample``; names the nearest."""
        if not self.is_valid_num_frames(t):
            d = self.temporal_downsample
            raise ValueError(
                f"{what} must have T = 1 + {d}k frames, got T={t}; nearest valid T is "
                f"{self.nearest_num_frames(t)}"
            )

    def latent_frames(self, t: int) -> int:
        """Latent frames for ``t`` (valid) video frames: ``1 + (t - 1) / temporal_downsample``."""
        return 1 + (t - 1) // self.temporal_downsample

    def video_frames(self, t_latent: int) -> int:
        """Decoded video frames for ``t_latent`` latent frames: ``1 + (t_latent - 1) * d``."""
        return 1 + (t_latent - 1) * self.temporal_downsample

    def latent_chunk(self, t_chunk: int) -> int:
        """Decoder chunk (latent frames) matching an encoder chunk of ``t_chunk`` video frames."""
        return max(t_chunk // self.temporal_downsample, 1)

    # ---- The chunk rule: the one place that knows which Causal Cache chunks a model runs. ----

    def check_t_chunk(self, t_chunk: Any, op: str = "encode", *, direct_ok: bool = True) -> None:
        """Raises ValueError unless ``t_chunk`` is a Causal Cache chunk that ``op`` can run.

        Args:
          t_chunk: for ``op="encode"`` video frames per chunk, a positive multiple of
            ``temporal_downsample`` (the chunk must hold whole latent frames); for
            ``op="decode"`` latent frames per chunk, ``>= 1``. ``0`` (direct inference) passes
            when ``direct_ok``.
          op: ``"encode"`` or ``"decode"``.
          direct_ok: whether ``0`` (no chunking) is accepted.
        Raises:
          ValueError: ``norm_type="groupnorm"`` with a chunk (GroupNorm normalises over all
            frames of a clip, so chunks cannot reproduce it; the message names groupnorm), or a
            ``t_chunk`` that is not an int, not positive or not a multiple of the unit (the
            message names the unit: "a positive multiple of 4 (video frames per encoder
            chunk)").
        Source: paper Sec. 3.3 (chunks after the first frame hold ``temporal_downsample`` video
        frames per latent frame); reference ``WFVAEModel.tile_encode`` / ``tile_decode``.
        """
        if op not in ("encode", "decode"):
            raise ValueError(f"op must be 'encode' or 'decode', got {op!r}")
        is_int = isinstance(t_chunk, int) and not isinstance(t_chunk, bool)
        if direct_ok and is_int and t_chunk == 0:
            return
        if self.norm_type == "groupnorm":
            raise ValueError(
                "Causal Cache chunking is not exact for norm_type='groupnorm' (GroupNorm mixes "
                "all frames of a clip); encode/decode without t_chunk"
            )
        unit, frames = (
            (self.temporal_downsample, "video frames per encoder chunk")
            if op == "encode"
            else (1, "latent frames per decoder chunk")
        )
        if not is_int or t_chunk < unit or t_chunk % unit:
            direct = "0 (direct) or " if direct_ok else ""
            raise ValueError(
                f"t_chunk must be {direct}a positive multiple of {unit} ({frames}), got {t_chunk}"
            )

    def nearest_t_chunk(self, t_chunk: int) -> int:
        """The nearest valid encoder chunk (a positive multiple of ``temporal_downsample``)."""
        d = self.temporal_downsample
        return max(d, round(t_chunk / d) * d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WFVAEConfig:
        """Builds a config from a reference ``config.json`` dict.

        Raises:
          ValueError: a key that is neither a constructor field nor diffusers metadata.
        """
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(k for k in d if k not in names and k not in _IGNORED_KEYS)
        if unknown:
            raise ValueError(f"unknown WF-VAE config keys: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> WFVAEConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["scale"], d["shift"] = list(self.scale), list(self.shift)
        return {"_class_name": "WFVAEModel", **d}

    def replace(self, **kw: Any) -> WFVAEConfig:
        return dataclasses.replace(self, **kw)


# Open-Sora Plan v1.5.0's released latent normalisation (its config's ``scale``/``shift``).
# fmt: off
_OSP15_SCALE = (
    0.7031, 0.7109, 1.5391, 1.2969, 0.7109, 1.4141, 1.3828, 2.1719,
    1.7266, 1.8281, 1.9141, 1.2031, 0.6875, 0.9609, 1.6484, 1.1875,
    1.5312, 1.1328, 0.8828, 0.6836, 0.8828, 0.9219, 1.6953, 1.4453,
    1.5312, 0.6836, 0.7656, 0.8242, 1.2344, 1.0312, 1.7266, 0.9492,
)
_OSP15_SHIFT = (
    -0.2129, 0.1226, 1.6328, 0.6211, -0.8750, 0.6172, -0.5703, 0.1348,
    -0.2178, -0.9375, 0.3184, 0.3281, -0.0544, -0.1826, -0.2812, 0.4355,
    0.1621, -0.2578, 0.7148, -0.7422, -0.2295, -0.2324, -1.4922, 0.6328,
    1.1250, -0.2578, -2.1094, 1.0391, 1.1797, -1.2422, -0.2988, -0.9570,
)
# fmt: on


def level1_blocks(temporal_downsample: int) -> dict[str, str]:
    """The four level-1 config fields (``l1_dowmsample_block``, ..) of the 4x or 8x variant.

    Raises:
      ValueError: ``temporal_downsample`` not 4 or 8.
    """
    if temporal_downsample not in _L1_VARIANTS:
        raise ValueError(f"temporal_downsample must be 4 or 8, got {temporal_downsample}")
    return dict(zip(_L1_FIELDS, _L1_VARIANTS[temporal_downsample], strict=True))


def _released(**kw: Any) -> WFVAEConfig:
    base = dict(norm_type="layernorm", t_interpolation="trilinear", use_attention=True)
    base.update(kw)
    return WFVAEConfig(**base)


def _paper_size(base_channels: int, latent_dim: int) -> WFVAEConfig:
    """A released WF-VAE of paper Table 3's sizes: energy flow 128 in the encoder and decoder."""
    return _released(
        base_channels=base_channels,
        latent_dim=latent_dim,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
    )


# Paper Table 3 sizes (base 128/160/192, energy flow 128/128); latent_dim 4 in the paper's S/M/L
# rows, 16 in the released L checkpoint. The Open-Sora Plan v1.3 S is the 8-channel model it ships.
NAMED_CONFIGS: dict[str, WFVAEConfig] = {
    "WF-VAE-S": _paper_size(128, 4),
    "WF-VAE-M": _paper_size(160, 4),
    "WF-VAE-L": _paper_size(192, 4),
    "WF-VAE-L-16Chn": _paper_size(192, 16),
    "OpenSoraPlan-v1.3-WF-VAE-S-8Chn": _released(
        base_channels=128,
        latent_dim=8,
        encoder_energy_flow_hidden_size=64,
        decoder_energy_flow_hidden_size=128,
        connect_res_layer_num=2,
    ),
    # Open-Sora Plan v1.5.0's 8x8x8 WF-VAE-M (wfvae_888_dim32.ckpt, "Anysize_8x8x8_32dim"):
    # every value, scale/shift included, from the ``ae`` section of model_opensoraplan1_5.json
    # and inference_t2v_model1_5.json in the README of PKU-YuanGroup/Open-Sora-Plan's
    # mindspeed_mmdit branch (attention_type is not listed there; AttnBlock3DFix is the default
    # and the only one); 8x8x8 (32) and "WF-VAE-M" from its docs/Report-v1.5.0.md.
    "OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn": _released(
        base_channels=160,
        latent_dim=32,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
        connect_res_layer_num=1,
        **level1_blocks(8),
        scale=_OSP15_SCALE,
        shift=_OSP15_SHIFT,
    ),
    # The shared parity checkpoints' architecture (4x: wfvae_tiny; with the 8x level-1 fields:
    # wfvae_888_tiny); small enough for CPU tests and runs.
    "tiny": _released(
        base_channels=16,
        latent_dim=8,
        encoder_energy_flow_hidden_size=16,
        decoder_energy_flow_hidden_size=16,
    ),
}


def nearest_valid_num_frames(t: int, temporal_downsample: int = 4) -> int:
    """The nearest frame count ``1 + k * temporal_downsample`` (ties go down), at least 1."""
    d = temporal_downsample
    k = max(round((t - 1) / d - 1e-9), 0)
    return 1 + d * k


def get_config(name: str) -> WFVAEConfig:
    """Returns a named config (``NAMED_CONFIGS``); raises ValueError listing the names."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown WF-VAE config {name!r}; known: {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]
