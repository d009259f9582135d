"""``python -m wfvae_jax COMMAND ...``: the ``wfvae`` command without the console script."""

from wfvae_jax.commands.cli import main

main()
