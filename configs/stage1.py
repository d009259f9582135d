"""The packaged config ``stage1`` (wfvae_jax/configs/stage1.py: its command, values and sources).

``python train.py --config configs/stage1.py`` is ``wfvae train --config stage1``.
"""

from wfvae_jax.configs.stage1 import *  # noqa: F403
from wfvae_jax.configs.stage1 import get_config  # noqa: F401
