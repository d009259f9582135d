"""``python -m wfvae_jax.reconstruct``: the earlier spelling of ``wfvae reconstruct``, kept working.

The command lives in :mod:`wfvae_jax.recon_video`. Do not ``import wfvae_jax.reconstruct``: the
import system would bind this module over the function ``wfvae_jax.reconstruct``. ``python -m``
runs it as ``__main__`` without that binding.
"""

if __name__ == "__main__":
    from wfvae_jax.cli_errors import run
    from wfvae_jax.recon_video import main

    run(main)
