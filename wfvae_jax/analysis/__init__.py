"""Analyses of trained models' latents (``python -m wfvae_jax.analysis.<name>``)."""
