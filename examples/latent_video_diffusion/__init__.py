"""A small latent video diffusion model on WF-VAE latents; see README.md in this folder."""
