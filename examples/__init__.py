"""Worked examples that use wfvae_jax as a library (run from the repository root)."""
