"""The packaged config ``lc_vae`` (wfvae_jax/configs/lc_vae.py: its command, values and sources).

``python train.py --config configs/lc_vae.py`` is ``wfvae train --config lc_vae``.
"""

from wfvae_jax.configs.lc_vae import *  # noqa: F403
from wfvae_jax.configs.lc_vae import get_config  # noqa: F401
