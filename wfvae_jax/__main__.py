"""``python -m wfvae_jax COMMAND ...``: the ``wfvae`` command without the console script."""

from wfvae_jax.cli import main

main()
