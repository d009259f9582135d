"""WF-VAE model configuration, field for field the reference's ``WFVAEModel`` constructor.

Source: reference ``causalvideovae/model/vae/modeling_wfvae.py`` (``WFVAEModel.__init__``); a
released ``config.json`` maps 1:1 onto :class:`WFVAEConfig` (see :meth:`WFVAEConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# The only block/wavelet choices the released WF-VAE checkpoints use; the reference's registry has
# others (e.g. an 8x temporal variant) that no released checkpoint needs.
_SUPPORTED = {
    "l1_dowmsample_block": ("Downsample",),
    "l1_downsample_wavelet": ("HaarWaveletTransform2D",),
    "l2_dowmsample_block": ("Spatial2xTime2x3DDownsample",),
    "l2_downsample_wavelet": ("HaarWaveletTransform3D",),
    "l1_upsample_block": ("Upsample",),
    "l1_upsample_wavelet": ("InverseHaarWaveletTransform2D",),
    "l2_upsample_block": ("Spatial2xTime2x3DUpsample",),
    "l2_upsample_wavelet": ("InverseHaarWaveletTransform3D",),
    "attention_type": ("AttnBlock3DFix",),
    "norm_type": ("layernorm", "groupnorm"),
    "t_interpolation": ("trilinear", "nearest"),
}
# Keys diffusers writes into config.json that are not constructor arguments.
_IGNORED_KEYS = ("_class_name", "_diffusers_version", "_name_or_path")


@dataclasses.dataclass(frozen=True)
class WFVAEConfig:
    """Hyper-parameters of a WF-VAE; names and defaults follow the reference constructor.

    Note the reference's spelling ``l1_dowmsample_block``/``l2_dowmsample_block`` is kept so that a
    released config.json loads unchanged. ``scale``/``shift`` are the latent normalisation for
    diffusion users (the reference ships 4-entry placeholders; ``python -m wfvae_jax.latent_stats``
    measures real per-channel values).
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
        return 8 if self.l1_dowmsample_block == "Spatial2xTime2x3DDownsample" else 4

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


def _released(**kw: Any) -> WFVAEConfig:
    base = dict(norm_type="layernorm", t_interpolation="trilinear", use_attention=True)
    base.update(kw)
    return WFVAEConfig(**base)


# Paper Table 3 sizes (base 128/160/192, energy flow 128/128); latent_dim 4 in the paper's S/M/L
# rows, 16 in the released L checkpoint. The Open-Sora Plan v1.3 S is the 8-channel model it ships.
NAMED_CONFIGS: dict[str, WFVAEConfig] = {
    "WF-VAE-S": _released(
        base_channels=128,
        latent_dim=4,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
    ),
    "WF-VAE-M": _released(
        base_channels=160,
        latent_dim=4,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
    ),
    "WF-VAE-L": _released(
        base_channels=192,
        latent_dim=4,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
    ),
    "WF-VAE-L-16Chn": _released(
        base_channels=192,
        latent_dim=16,
        encoder_energy_flow_hidden_size=128,
        decoder_energy_flow_hidden_size=128,
    ),
    "OpenSoraPlan-v1.3-WF-VAE-S-8Chn": _released(
        base_channels=128,
        latent_dim=8,
        encoder_energy_flow_hidden_size=64,
        decoder_energy_flow_hidden_size=128,
        connect_res_layer_num=2,
    ),
    # The shared parity checkpoint's architecture; small enough for CPU tests and runs.
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
