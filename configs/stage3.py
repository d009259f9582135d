"""The packaged config ``stage3`` (wfvae_jax/configs/stage3.py: its command, values and sources).

``python train.py --config configs/stage3.py`` is ``wfvae train --config stage3``.
"""

from wfvae_jax.configs.stage3 import *  # noqa: F403
from wfvae_jax.configs.stage3 import get_config  # noqa: F401
