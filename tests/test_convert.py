"""Converter: key mapping, error reporting, .ckpt selection, orbax round trip, CLI."""

import json

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import wfvae_jax
from wfvae_jax.commands.convert import main
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.io.convert import (
    flax_path_to_torch_key,
    load_reference,
    params_to_torch_state_dict,
    torch_state_dict_to_params,
)

from .conftest import DATA, SHARED, TINY

CKPT = DATA / "ckpt"


def test_key_mapping_examples():
    assert flax_path_to_torch_key(("encoder", "down1_1", "conv1", "kernel")) == (
        "encoder.down1.1.conv1.weight"
    )
    assert flax_path_to_torch_key(("decoder", "connect_l1_0", "norm1", "norm", "scale")) == (
        "decoder.connect_l1.0.norm1.norm.weight"
    )
    assert flax_path_to_torch_key(("decoder", "up2_2", "conv", "conv", "bias")) == (
        "decoder.up2.2.conv.conv.bias"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        dict(
            norm_type="groupnorm",
            base_channels=32,
            encoder_energy_flow_hidden_size=32,
            decoder_energy_flow_hidden_size=32,
        ),
        dict(
            latent_dim=16, connect_res_layer_num=2, encoder_num_resblocks=3, decoder_num_resblocks=1
        ),
        dict(connect_res_layer_num=0, use_attention=False),
    ],
)
def test_round_trip_through_reference_layout(overrides):
    cfg = WFVAEConfig(
        **{
            **dict(
                base_channels=8,
                encoder_energy_flow_hidden_size=8,
                decoder_energy_flow_hidden_size=8,
                norm_type="layernorm",
            ),
            **overrides,
        }
    )
    # Distinct random values in every entry (init's zero biases and unit scales would hide a
    # swapped pair); shapes from tracing init, without compiling it.
    shapes = jax.eval_shape(lambda: wfvae_jax.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    sd = params_to_torch_state_dict(params)
    # Torch layout: (O, I, kt, kh, kw) for 3D kernels.
    k = sd["decoder.conv_in.conv.weight"]
    assert k.shape == (4 * cfg.base_channels, cfg.latent_dim, 3, 3, 3)
    back = torch_state_dict_to_params(sd, cfg)
    a, b = flatten_dict(params), flatten_dict(back)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), b[key])


def test_errors_list_missing_unexpected_and_mismatched(tiny):
    from safetensors.numpy import load_file

    _, config, _ = tiny
    sd = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    sd.pop("decoder.conv_out.bias")
    sd["encoder.extra.weight"] = np.zeros(3, np.float32)
    sd["encoder.conv_out.conv.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError) as e:
        torch_state_dict_to_params(sd, config)
    msg = str(e.value)
    assert "missing keys (1): ['decoder.conv_out.bias']" in msg
    assert "unexpected keys (1): ['encoder.extra.weight']" in msg
    assert "encoder.conv_out.conv.bias: checkpoint (5,) vs model (16,)" in msg


def test_config_that_does_not_match_checkpoint_lists_every_difference():
    wrong = WFVAEConfig.from_json(TINY / "config.json").replace(
        latent_dim=16,
        norm_type="groupnorm",
        base_channels=32,
        encoder_energy_flow_hidden_size=32,
        decoder_energy_flow_hidden_size=32,
    )
    with pytest.raises(ValueError, match="disagrees with the weights") as e:
        load_reference(TINY, config=wrong)
    msg = str(e.value).split("\n")[0]  # what a command-line user sees
    for diff in (
        "latent_dim: 16 in the config, 8 in the weights",
        "norm_type: 'groupnorm' in the config, 'layernorm' in the weights",
        "base_channels: 32 in the config, 16 in the weights",
        "encoder_energy_flow_hidden_size: 32 in the config, 16 in the weights",
        "decoder_energy_flow_hidden_size: 32 in the config, 16 in the weights",
    ):
        assert diff in msg


def test_keys_that_do_not_match_are_summarised_on_the_first_line(tiny):
    from safetensors.numpy import load_file

    sd = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    sd.pop("decoder.conv_out.bias")
    with pytest.raises(ValueError) as e:
        torch_state_dict_to_params(sd, tiny[1])
    assert "1 missing keys (first: decoder.conv_out.bias)" in str(e.value).split("\n")[0]


def test_modified_haar_kernel_is_an_error():
    from safetensors.numpy import load_file

    sd = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    sd["decoder.inverse_wavelet_transform_out.h"] = (
        sd["decoder.inverse_wavelet_transform_out.h"] * 2
    )
    with pytest.raises(ValueError, match="Haar kernels"):
        torch_state_dict_to_params(sd, WFVAEConfig.from_json(TINY / "config.json"))


@pytest.mark.parametrize("use_ema,which", [(True, "ema"), (False, "gen")])
def test_training_ckpt_prefers_ema(use_ema, which):
    params, cfg = load_reference(
        CKPT / "small_train.ckpt", str(CKPT / "small_config.json"), use_ema=use_ema
    )
    sd = params_to_torch_state_dict(params)
    with np.load(CKPT / f"expected_{which}.npz") as want:
        assert sorted(want.files) == sorted(sd)
        for k in want.files:
            np.testing.assert_array_equal(sd[k], want[k])


def test_ckpt_without_config_is_converted_by_inference(tmp_path):
    import shutil

    shutil.copy(CKPT / "small_train.ckpt", tmp_path / "x.ckpt")
    lines = []
    params, cfg = load_reference(tmp_path / "x.ckpt", report=lines.append)
    want = WFVAEConfig.from_json(CKPT / "small_config.json")
    assert cfg == want  # small_config.json has trilinear and the placeholder scale/shift
    with np.load(CKPT / "expected_ema.npz") as ema:
        got = params_to_torch_state_dict(params)
        for k in ema.files:
            np.testing.assert_array_equal(got[k], ema[k])
    text = "\n".join(lines)
    assert "config inferred from the weights" in text
    assert "base_channels=4 latent_dim=4 norm_type=layernorm" in text
    assert "connect_res_layer_num=2" in text
    assert "t_interpolation is not stored in the weights; using 'trilinear'" in text
    assert "--t_interpolation" in text
    # The flag overrides the released default.
    _, cfg = load_reference(tmp_path / "x.ckpt", t_interpolation="nearest")
    assert cfg.t_interpolation == "nearest"


def _shapes_state_dict(cfg: WFVAEConfig) -> dict[str, np.ndarray]:
    """Zero-stride arrays with the reference's names and shapes for ``cfg`` (nothing computed)."""
    from wfvae_jax.io.checkpoint import param_template

    out = {}
    for path, leaf in flatten_dict(param_template(cfg)).items():
        shape = tuple(leaf.shape)
        if path[-1] == "kernel":  # (*k, I, O) -> (O, I, *k)
            shape = (shape[-1], shape[-2], *shape[:-2])
        out[flax_path_to_torch_key(path)] = np.broadcast_to(np.float32(0), shape)
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(norm_type="groupnorm", base_channels=32, encoder_energy_flow_hidden_size=64),
        dict(use_attention=False, connect_res_layer_num=0, latent_dim=16),
        dict(connect_res_layer_num=3, encoder_num_resblocks=3, decoder_num_resblocks=1),
        dict(encoder_num_resblocks=1, decoder_num_resblocks=4, decoder_energy_flow_hidden_size=24),
    ],
)
def test_inference_recovers_every_architecture_field(overrides):
    from wfvae_jax.io.convert import ARCHITECTURE_FIELDS, infer_config_fields

    base = dict(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=16,
        norm_type="layernorm",
    )
    if overrides.get("norm_type") == "groupnorm":
        base["decoder_energy_flow_hidden_size"] = 32
    cfg = WFVAEConfig(**{**base, **overrides})
    fields = infer_config_fields(_shapes_state_dict(cfg))
    assert fields == {k: getattr(cfg, k) for k in ARCHITECTURE_FIELDS}


def test_inference_on_the_reference_888_state_dict_names_and_shapes():
    from wfvae_jax.io.convert import ARCHITECTURE_FIELDS, infer_config_fields

    layouts = DATA / "layouts"
    shapes = json.loads((layouts / "wfvae_888_tiny_shapes.json").read_text())
    if (SHARED / "parity" / "wfvae_888_tiny").is_dir():  # the fixture is that file's key/shapes
        from safetensors import safe_open

        path = SHARED / "parity" / "wfvae_888_tiny" / "diffusion_pytorch_model.safetensors"
        with safe_open(str(path), "np") as f:
            assert {k: f.get_slice(k).get_shape() for k in f.keys()} == shapes
    fields = infer_config_fields({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()})
    # The reference's config.json of that checkpoint (shared/parity/wfvae_888_tiny).
    want = dict(
        base_channels=16,
        latent_dim=8,
        encoder_num_resblocks=2,
        decoder_num_resblocks=2,
        encoder_energy_flow_hidden_size=16,
        decoder_energy_flow_hidden_size=16,
        connect_res_layer_num=1,
        use_attention=True,
        norm_type="layernorm",
        l1_dowmsample_block="Spatial2xTime2x3DDownsample",
        l1_downsample_wavelet="HaarWaveletTransform3D",
        l2_dowmsample_block="Spatial2xTime2x3DDownsample",
        l2_downsample_wavelet="HaarWaveletTransform3D",
        l1_upsample_block="Spatial2xTime2x3DUpsample",
        l1_upsample_wavelet="InverseHaarWaveletTransform3D",
        l2_upsample_block="Spatial2xTime2x3DUpsample",
        l2_upsample_wavelet="InverseHaarWaveletTransform3D",
    )
    assert set(fields) == set(ARCHITECTURE_FIELDS)
    assert fields == want


def test_inference_refuses_mixed_4x_and_8x_evidence():
    from wfvae_jax.io.convert import infer_config_fields

    cfg = WFVAEConfig(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=8,
        norm_type="layernorm",
    )
    sd = _shapes_state_dict(cfg)
    sd["encoder.connect_l1.weight"] = np.broadcast_to(np.float32(0), (8, 24, 3, 3))  # 3D Haar in
    with pytest.raises(ValueError, match="temporal compression is ambiguous") as e:
        infer_config_fields(sd)
    assert "encoder.connect_l1 input channels -> 8x" in str(e.value)
    assert "decoder.up1 upsampler -> 4x" in str(e.value)


def test_inference_of_a_state_dict_that_is_no_wfvae_names_the_missing_key():
    from wfvae_jax.io.convert import infer_config_fields

    with pytest.raises(ValueError, match="cannot infer the WF-VAE architecture") as e:
        infer_config_fields({"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)})
    assert "pass --config" in str(e.value)


def test_layernorm_and_groupnorm_parameters_have_different_names():
    # Why norm_type needs no flag: the reference's LayerNorm wraps nn.LayerNorm as `.norm`.
    def norm_keys(norm_type):
        cfg = WFVAEConfig(
            base_channels=32,
            encoder_energy_flow_hidden_size=32,
            decoder_energy_flow_hidden_size=32,
            norm_type=norm_type,
        )
        return {k for k in _shapes_state_dict(cfg) if k.startswith("encoder.norm_out.")}

    assert norm_keys("layernorm") == {"encoder.norm_out.norm.weight", "encoder.norm_out.norm.bias"}
    assert norm_keys("groupnorm") == {"encoder.norm_out.weight", "encoder.norm_out.bias"}


def test_cli_writes_an_export_that_loads(tmp_path, tiny):
    params, config, vec = tiny
    main([str(TINY), str(tmp_path / "conv")])
    loaded, cfg = wfvae_jax.load_pretrained(tmp_path / "conv")
    assert cfg == config
    assert json.loads((tmp_path / "conv" / "config.json").read_text())["latent_dim"] == 8
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_pretrained_on_unconverted_release_says_convert():
    with pytest.raises(FileNotFoundError, match="wfvae convert"):
        wfvae_jax.load_pretrained(TINY)
