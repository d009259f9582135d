"""Settings of the latent video diffusion example: one ``ml_collections.ConfigDict`` per preset.

``cpu`` trains a ~0.4 M-parameter transformer that shows a falling loss within minutes on a
laptop CPU; ``base`` is a DiT-S-sized model for an accelerator. Any field can be changed from
the command line: ``--set model.width=256 --set train.steps=5000``.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

import ml_collections


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """The settings of ``preset`` (``"cpu"`` or ``"base"``).

    Raises:
      ValueError: an unknown preset, naming the known ones.
    """
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        dict(
            patch_size=2,  # latent positions per token along h and w (time is not patched)
            width=96,  # token width
            depth=4,  # transformer blocks
            num_heads=4,
            mlp_ratio=4.0,
            dtype="float32",  # compute dtype; "bfloat16" on accelerators (params stay float32)
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            steps=400,
            batch_size=8,  # global: split over the "data" mesh axis
            learning_rate=1e-3,
            warmup_steps=20,
            weight_decay=0.0,
            grad_clip=1.0,
            # Rectified flow's time draw: t = sigmoid(N(mean, std)) (SD3's logit-normal, which
            # spends more steps on mid-noise levels), or "uniform".
            time_sampling="logit_normal",
            logit_mean=0.0,
            logit_std=1.0,
            sample_posterior=True,  # draw z ~ q(z|x) per step (False: the posterior mean)
            seed=0,
            log_every=5,
            checkpoint_every=50,
            max_to_keep=2,
        )
    )
    c.sample = ml_collections.ConfigDict(
        dict(
            num_samples=4,
            num_steps=8,  # ODE steps from noise (t=1) to data (t=0)
            solver="heun",  # "euler" (1 model call per step) or "heun" (2, second order)
            seed=0,
            t_chunk=1,  # latent frames per Causal Cache chunk when decoding (0: whole clip)
        )
    )
    if preset == "base":  # DiT-S/2 widths (Peebles & Xie 2023, Table 1)
        c.model.update(width=384, depth=12, num_heads=6, dtype="bfloat16")
        c.train.update(steps=200_000, batch_size=64, learning_rate=1e-4, warmup_steps=1000)
        c.train.update(log_every=100, checkpoint_every=2000)
        c.sample.update(num_steps=32, t_chunk=4)
    elif preset != "cpu":
        raise ValueError(f"unknown preset {preset!r}; known: cpu, base")
    c.lock()  # a misspelt override is an error, not a new field
    return c


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies ``FIELD=VALUE`` strings (``"train.steps=100"``) in place; values are Python
    literals (a bare word is a string).

    Raises:
      ValueError: no ``=``, an unknown field, or a value of the wrong type.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. train.steps=100")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        try:
            config.update_from_flattened_dict({key: value})
        except (KeyError, AttributeError) as e:
            raise ValueError(f"--set {item!r}: unknown field {key!r}") from e
        except TypeError as e:
            raise ValueError(f"--set {item!r}: {e}") from e
