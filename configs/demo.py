"""The packaged config ``demo`` (wfvae_jax/configs/demo.py: its command, values and sources).

``python train.py --config configs/demo.py`` is ``wfvae train --config demo``.
"""

from wfvae_jax.configs.demo import *  # noqa: F403
from wfvae_jax.configs.demo import get_config  # noqa: F401
