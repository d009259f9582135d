"""Named configs and parameter counts against the paper's Table 3."""

import json

import jax
import numpy as np
import pytest

from wfvae_jax.config import WFVAEConfig, get_config
from wfvae_jax.model import init_params

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
        WFVAEConfig(l1_dowmsample_block="Spatial2xTime2x3DDownsample")
    with pytest.raises(ValueError, match="divisible by 32"):
        WFVAEConfig(norm_type="groupnorm", base_channels=16)
    with pytest.raises(ValueError, match="known"):
        get_config("WF-VAE-XXL")
