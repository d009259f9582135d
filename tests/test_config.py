"""Named configs and parameter counts against the paper's Table 3."""

import json

import jax
import numpy as np
import pytest

from wfvae_jax.core.config import WFVAEConfig, get_config
from wfvae_jax.core.model import init_params

# Paper Table 3 (millions of parameters, encoder / decoder).
TABLE3 = {"WF-VAE-S": (38, 108), "WF-VAE-M": (58, 164), "WF-VAE-L": (84, 232)}


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_parameter_counts_match_table3(name):
    shapes = jax.eval_shape(lambda: init_params(get_config(name), jax.random.key(0)))
    enc = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["encoder"])) / 1e6
    dec = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["decoder"])) / 1e6
    want_enc, want_dec = TABLE3[name]
    assert abs(enc - want_enc) < 1.0, enc
    assert abs(dec - want_dec) < 1.0, dec


def test_open_sora_plan_s_is_146m():
    shapes = jax.eval_shape(
        lambda: init_params(get_config("OpenSoraPlan-v1.3-WF-VAE-S-8Chn"), jax.random.key(0))
    )
    total = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) / 1e6
    assert 145 < total < 149, total  # the reference README's "8-channel WF-VAE-S (146M)"


def test_config_json_round_trip(tmp_path):
    from tests.conftest import TINY

    cfg = WFVAEConfig.from_json(TINY / "config.json")
    assert cfg.base_channels == 16 and cfg.norm_type == "layernorm"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg.to_dict()))
    assert WFVAEConfig.from_json(p) == cfg


def test_unknown_and_unsupported_keys_raise():
    with pytest.raises(ValueError, match="unknown WF-VAE config keys"):
        WFVAEConfig.from_dict({"latent_dim": 4, "bogus": 1})
    with pytest.raises(ValueError, match="not supported"):
        WFVAEConfig(l1_dowmsample_block="SpatialDownsample2x")
    with pytest.raises(ValueError, match="inconsistent level-1 blocks"):
        WFVAEConfig(l1_dowmsample_block="Spatial2xTime2x3DDownsample")
    with pytest.raises(ValueError, match="divisible by 32"):
        WFVAEConfig(norm_type="groupnorm", base_channels=16)
    with pytest.raises(ValueError, match="known"):
        get_config("WF-VAE-XXL")


L1_FIELDS = (
    "l1_dowmsample_block",
    "l1_downsample_wavelet",
    "l1_upsample_block",
    "l1_upsample_wavelet",
)
L1_4X = ("Downsample", "HaarWaveletTransform2D", "Upsample", "InverseHaarWaveletTransform2D")
L1_8X = (
    "Spatial2xTime2x3DDownsample",
    "HaarWaveletTransform3D",
    "Spatial2xTime2x3DUpsample",
    "InverseHaarWaveletTransform3D",
)


def test_8x_variant_config():
    from tests.conftest import TINY_888

    cfg = WFVAEConfig.from_json(TINY_888 / "config.json")
    assert tuple(getattr(cfg, k) for k in L1_FIELDS) == L1_8X
    assert cfg.temporal_downsample == 8 and WFVAEConfig().temporal_downsample == 4
    assert [cfg.latent_frames(t) for t in (1, 9, 17, 41)] == [1, 2, 3, 6]
    assert [cfg.video_frames(t) for t in (1, 2, 6)] == [1, 9, 41]
    assert cfg.latent_chunk(16) == 2 and cfg.latent_chunk(4) == 1
    assert [cfg.is_valid_num_frames(t) for t in (1, 5, 9, 13, 17)] == [1, 0, 1, 0, 1]
    assert cfg.to_dict()["l1_upsample_wavelet"] == "InverseHaarWaveletTransform3D"


@pytest.mark.parametrize("i", range(4))
@pytest.mark.parametrize("base,other", [(L1_4X, L1_8X), (L1_8X, L1_4X)])
def test_mixed_level1_fields_name_the_fields(i, base, other):
    fields = dict(zip(L1_FIELDS, base, strict=True))
    fields[L1_FIELDS[i]] = other[i]  # one field from the other variant
    with pytest.raises(ValueError, match="inconsistent level-1 blocks") as err:
        WFVAEConfig(**fields)
    for k in L1_FIELDS:
        assert k in str(err.value)


def test_8x_parameter_shapes():
    """The reference's 8x layout: 3D level-1 downsampler, 24-channel level-1 energy flow."""
    cfg = get_config("tiny").replace(**dict(zip(L1_FIELDS, L1_8X, strict=True)))
    p = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    b, e = cfg.base_channels, cfg.encoder_energy_flow_hidden_size
    assert p["encoder"]["down1_3"]["conv"]["conv"]["kernel"].shape == (3, 3, 3, b, b)
    assert p["encoder"]["connect_l1"]["kernel"].shape == (3, 3, 24, e)
    assert p["decoder"]["connect_l1_1"]["kernel"].shape[-1] == 24
    assert p["decoder"]["up1_2"]["conv"]["conv"]["kernel"].shape == (3, 3, 3, 2 * b, 2 * b)
    p4 = jax.eval_shape(lambda: init_params(get_config("tiny"), jax.random.key(0)))
    assert p4["encoder"]["down1_3"]["conv"]["kernel"].shape == (3, 3, b, b)
    assert p4["encoder"]["connect_l1"]["kernel"].shape == (3, 3, 12, e)


def test_level1_blocks():
    from wfvae_jax.core.config import level1_blocks

    assert tuple(level1_blocks(4).values()) == L1_4X and tuple(level1_blocks(8).values()) == L1_8X
    assert WFVAEConfig(**level1_blocks(8)).temporal_downsample == 8
    with pytest.raises(ValueError, match="4 or 8"):
        level1_blocks(16)


def test_open_sora_plan_v15_config():
    cfg = get_config("OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn")
    assert cfg.temporal_downsample == 8 and cfg.latent_dim == 32
    assert len(cfg.scale) == len(cfg.shift) == cfg.latent_dim  # per-channel normalisation
    # The same widths as WF-VAE-M; the 8x level 1 adds its 3D downsampler/upsampler kernels.
    m4 = get_config("WF-VAE-M")
    assert (cfg.base_channels, cfg.encoder_energy_flow_hidden_size) == (
        m4.base_channels,
        m4.encoder_energy_flow_hidden_size,
    )


def test_t_chunk_rule():
    """The one chunk rule: encoder chunks in video frames (multiples of temporal_downsample),
    decoder chunks in latent frames (>= 1), 0 = direct only where allowed, no groupnorm."""
    c4, c8 = get_config("WF-VAE-S"), get_config("OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn")
    cases = ((c4, (4, 8, 16), (1, 2, 6, -4), [4, 4, 8, 4]), (c8, (8, 16), (4, 12, -8), [8, 16, 8]))
    for cfg, good, bad, nearest in cases:
        for t in good:
            cfg.check_t_chunk(t, "encode", direct_ok=False)
        unit = cfg.temporal_downsample
        for t in bad:
            with pytest.raises(
                ValueError, match=f"0 \\(direct\\) or a positive multiple of {unit} "
            ):
                cfg.check_t_chunk(t, "encode")
        assert [cfg.nearest_t_chunk(t) for t in bad] == nearest
    c4.check_t_chunk(0, "encode")
    c4.check_t_chunk(1, "decode", direct_ok=False)
    with pytest.raises(ValueError, match="must be a positive multiple of 4"):
        c4.check_t_chunk(0, "encode", direct_ok=False)
    with pytest.raises(ValueError, match="multiple of 1 \\(latent frames"):
        c4.check_t_chunk(0, "decode", direct_ok=False)
    for t in (4.0, True, None):
        with pytest.raises(ValueError, match="positive multiple"):
            c4.check_t_chunk(t, "encode")
    gn = c4.replace(norm_type="groupnorm", base_channels=32)
    gn.check_t_chunk(0, "encode")  # direct inference is exact for GroupNorm
    with pytest.raises(ValueError, match="groupnorm"):
        gn.check_t_chunk(4, "encode")
    with pytest.raises(ValueError, match="op must be"):
        c4.check_t_chunk(4, "encoder")
