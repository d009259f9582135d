"""The reference's training checkpoints: ``wfvae convert`` and ``train.py --config.init_from``.

``tests/data/reference_ckpt/freeze_encoder.ckpt`` was written by the reference's own
``train_ddp.py`` ``save_checkpoint`` after one step of a ``--freeze_encoder --ema`` run under DDP
(``make_fixture.py``): its ``ema_state_dict`` holds the decoder only, keys prefixed ``module.``;
``state_dict.gen_model`` the whole generator, ``state_dict.dics_model`` the whole
``LPIPSWithDiscriminator3D``. ``expected.npz`` holds what torch had in memory.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wfvae_jax.commands.convert import main as convert_main
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.errors import UserError
from wfvae_jax.io import torch_files
from wfvae_jax.io.convert import load_reference, params_to_torch_state_dict
from wfvae_jax.io.torch_zip import load_torch_pickle
from wfvae_jax.losses import LossConfig
from wfvae_jax.losses import discriminator as disc_lib
from wfvae_jax.train import checkpointing
from wfvae_jax.train.resume import reference_training_state
from wfvae_jax.train.state import OptimConfig, create_train_state
from wfvae_jax.train.step import StepConfig

DATA = pathlib.Path(__file__).parent / "data"
CKPT = DATA / "reference_ckpt" / "freeze_encoder.ckpt"
CONFIG = DATA / "ckpt" / "small_config.json"
NDF = 2  # make_fixture.py's discriminator width


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "reference_ckpt" / "expected.npz") as f:
        out: dict[str, dict[str, np.ndarray]] = {"ema": {}, "gen": {}, "disc": {}}
        for k in f.files:
            group, key = k.split("/", 1)
            out[group][key] = f[k]
    return out


def want_generator(expected, use_ema: bool) -> dict[str, np.ndarray]:
    """The weights a user means: the EMA where it has them, ``gen_model`` elsewhere."""
    want = dict(expected["gen"])
    if use_ema:
        want.update(expected["ema"])
    return want


def check_generator(params, want: dict[str, np.ndarray]) -> None:
    got = params_to_torch_state_dict(jax.device_get(params))
    assert set(got) <= set(want)
    for k, v in got.items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)


def test_fixture_is_a_freeze_encoder_run(expected):
    """The file holds what the issue describes (so the tests below test that case)."""
    obj = load_torch_pickle(CKPT)
    ema = obj["ema_state_dict"]
    assert ema and all(k.startswith("module.decoder.") for k in ema)
    assert set(obj["state_dict"]) == {"gen_model", "dics_model"}
    assert any(k.startswith("perceptual_loss.") for k in obj["state_dict"]["dics_model"])
    assert set(obj["optimizer_state"]) == {"gen_optimizer", "disc_optimizer"}
    # The EMA (decay 0.9 after one step) differs from the trained decoder: the tests can tell.
    k = "decoder.conv_out.weight"
    assert np.abs(expected["ema"][k] - expected["gen"][k]).max() > 1e-5


def test_generator_entry_fills_the_ema_from_gen_model(expected):
    entry = torch_files.generator_entry(load_torch_pickle(CKPT))
    assert entry.source == "ema_state_dict"
    # the whole encoder (parameters, Haar kernels, buffers) and the decoder's fixed Haar buffers
    assert entry.filled == sorted(set(expected["gen"]) - set(expected["ema"]))
    assert {k for k in entry.filled if k.startswith("encoder.")} == {
        k for k in expected["gen"] if k.startswith("encoder.")
    }
    for k, v in entry.state_dict.items():
        np.testing.assert_array_equal(v, want_generator(expected, True)[k], err_msg=k)
    no_ema = torch_files.generator_entry(load_torch_pickle(CKPT), use_ema=False)
    assert (no_ema.source, no_ema.filled) == ("state_dict.gen_model", [])


@pytest.mark.parametrize("use_ema", [True, False])
def test_convert_takes_the_missing_encoder_from_gen_model(expected, use_ema):
    lines: list[str] = []
    params, cfg = load_reference(CKPT, str(CONFIG), use_ema=use_ema, report=lines.append)
    check_generator(params, want_generator(expected, use_ema))
    n_params = len(params_to_torch_state_dict(params))
    assert n_params == 188  # every parameter of the small config is there
    said = [line for line in lines if "taken from state_dict.gen_model" in line]
    if use_ema:
        # One line naming them: 60 encoder parameters (not its 20 Haar kernels and buffers).
        assert len(said) == 1 and "lacks 60 parameters" in said[0]
        assert "encoder.* (60)" in said[0] and "encoder.connect_l1.bias" in said[0]
    else:
        assert said == []


def test_wfvae_convert_on_a_freeze_encoder_checkpoint(tmp_path, capsys, expected):
    """As a new user runs it: no config beside the file (inferred), one line about the EMA."""
    assert convert_main([str(CKPT), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("taken from state_dict.gen_model") == 1
    import wfvae_jax

    params, cfg = wfvae_jax.load_pretrained(tmp_path / "out")
    assert cfg.base_channels == 4 and cfg.latent_dim == 4
    check_generator(params, want_generator(expected, True))


def step_config(model: WFVAEConfig, ndf: int = NDF) -> StepConfig:
    return StepConfig(
        model=model, loss=LossConfig(disc_num_layers=4), optim=OptimConfig(), disc_ndf=ndf
    )


@pytest.fixture(scope="module")
def fresh_state():
    """A state of this run's shapes (zeros: traced, not compiled) and its shardings."""
    cfg = step_config(WFVAEConfig.from_json(CONFIG))
    abstract = jax.eval_shape(
        lambda: create_train_state(
            cfg.model, cfg.loss, cfg.optim, disc_ndf=NDF, rng=jax.random.key(0)
        )
    )
    state = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)
    return cfg, state, jax.tree.map(lambda a: a.sharding, state)


def test_init_from_reference_ckpt_takes_generator_and_discriminator(fresh_state, expected):
    cfg, state, sharding = fresh_state
    checkpointing.check_init_from(str(CKPT))  # accepted by train.py's config check
    new = reference_training_state(str(CKPT), cfg, state, sharding)
    want = want_generator(expected, True)
    check_generator(new.params, want)
    check_generator(new.ema_params, want)
    got = disc_lib.to_torch_state_dict(
        jax.device_get(new.disc_params), jax.device_get(new.disc_batch_stats), 4
    )
    assert set(got) == {k for k in expected["disc"] if "num_batches" not in k}
    for k, v in got.items():
        np.testing.assert_array_equal(v, expected["disc"][k], err_msg=k)
    # the BatchNorm statistics the reference's one step left are carried (not 0 and 1)
    assert np.abs(got["main.3.running_mean"]).max() > 0
    # the optimizer states are the fresh ones it was given
    assert new.opt_state is state.opt_state and new.disc_opt_state is state.disc_opt_state


def test_init_from_reference_ckpt_names_what_does_not_fit(fresh_state):
    cfg, state, sharding = fresh_state
    with pytest.raises(UserError, match=r"2 channels wide.*disc_ndf=8") as e:
        reference_training_state(str(CKPT), step_config(cfg.model, ndf=8), state, sharding)
    assert e.value.hint == "set --config.disc_ndf=2"
    other = cfg.model.replace(base_channels=8)
    with pytest.raises(UserError, match=r"base_channels: 8 in the config, 4 in the weights"):
        reference_training_state(str(CKPT), step_config(other), state, sharding)
