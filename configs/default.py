"""The packaged config ``default`` (wfvae_jax/configs/default.py: its command, values and sources).

``python train.py --config configs/default.py`` is ``wfvae train --config default``.
"""

from wfvae_jax.configs.default import *  # noqa: F403
from wfvae_jax.configs.default import get_config  # noqa: F401
