"""Converter: key mapping, error reporting, .ckpt selection, orbax round trip, CLI."""

import json

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import wfvae_jax
from wfvae_jax.config import WFVAEConfig
from wfvae_jax.convert import (
    flax_path_to_torch_key,
    load_reference,
    main,
    params_to_torch_state_dict,
    torch_state_dict_to_params,
)

from .conftest import DATA, TINY

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
    params = wfvae_jax.init_params(cfg, jax.random.key(0))
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


def test_config_that_does_not_match_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="shape mismatches"):
        load_reference(
            TINY, config=WFVAEConfig.from_json(TINY / "config.json").replace(latent_dim=16)
        )


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


def test_ckpt_without_config_is_a_clear_error(tmp_path):
    import shutil

    shutil.copy(CKPT / "small_train.ckpt", tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="pass --config"):
        load_reference(tmp_path / "x.ckpt")


def test_cli_writes_orbax_checkpoint_that_loads(tmp_path, tiny):
    params, config, vec = tiny
    main([str(TINY), str(tmp_path / "conv")])
    loaded, cfg = wfvae_jax.load_pretrained(tmp_path / "conv")
    assert cfg == config
    assert json.loads((tmp_path / "conv" / "config.json").read_text())["latent_dim"] == 8
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_pretrained_on_unconverted_release_says_convert():
    with pytest.raises(FileNotFoundError, match="wfvae_jax.convert"):
        wfvae_jax.load_pretrained(TINY)
