"""The packaged config ``stage2`` (wfvae_jax/configs/stage2.py: its command, values and sources).

``python train.py --config configs/stage2.py`` is ``wfvae train --config stage2``.
"""

from wfvae_jax.configs.stage2 import *  # noqa: F403
from wfvae_jax.configs.stage2 import get_config  # noqa: F401
