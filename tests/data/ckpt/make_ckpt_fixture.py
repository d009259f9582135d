"""Writes tests/data/ckpt/small_train.ckpt (two steps; the second needs torch, not run by tests).

A training checkpoint in the reference's train_ddp.py layout for a small layernorm WF-VAE
(``small_config.json``) holding two different weight sets: ``ema_state_dict`` (with the DDP
``module.`` prefix) and ``state_dict["gen_model"]``. ``expected_{ema,gen}.npz`` hold both in the
reference's key names and layout, written by step 1 from our random init.

    PYTHONPATH=. python tests/data/ckpt/make_ckpt_fixture.py params      # wfvae_jax venv
    python-with-torch tests/data/ckpt/make_ckpt_fixture.py ckpt          # any venv with torch
"""

import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent

if sys.argv[1] == "params":
    import jax

    from wfvae_jax.core.config import WFVAEConfig
    from wfvae_jax.core.model import init_params
    from wfvae_jax.io.convert import params_to_torch_state_dict

    cfg = WFVAEConfig(
        base_channels=4,
        latent_dim=4,
        encoder_num_resblocks=1,
        decoder_num_resblocks=1,
        encoder_energy_flow_hidden_size=4,
        decoder_energy_flow_hidden_size=4,
        connect_res_layer_num=2,
        norm_type="layernorm",
        t_interpolation="trilinear",
    )
    (HERE / "small_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    for name, seed in (("ema", 1), ("gen", 2)):
        sd = params_to_torch_state_dict(init_params(cfg, jax.random.key(seed)))
        np.savez_compressed(HERE / f"expected_{name}.npz", **sd)
else:
    import torch

    def load(name, prefix=""):
        with np.load(HERE / f"expected_{name}.npz") as f:
            return {prefix + k: torch.from_numpy(f[k]) for k in f.files}

    ckpt = {
        "epoch": 0,
        "current_step": 10,
        "ema_state_dict": load("ema", "module."),
        "state_dict": {"gen_model": load("gen"), "dics_model": {}},
    }
    torch.save(ckpt, HERE / "small_train.ckpt")
