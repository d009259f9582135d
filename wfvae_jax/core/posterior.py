"""Diagonal Gaussian posterior ``q(z | x)``.

Source: reference ``causalvideovae/model/utils/distrib_utils.py``
(``DiagonalGaussianDistribution``).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


@flax.struct.dataclass
class DiagonalGaussian:
    """Posterior with per-element ``mean`` and ``logvar`` (clamped to [-30, 20] as the reference).

    Shapes are the latent's, channels-last ``(B, t, h, w, latent_dim)``; dtype of the encoder
    output. Build with :meth:`from_moments`.
    """

    mean: jnp.ndarray
    logvar: jnp.ndarray

    @classmethod
    def from_moments(cls, moments: jnp.ndarray) -> DiagonalGaussian:
        """Splits encoder output ``(.., 2*latent_dim)`` into mean | logvar on the channel axis."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self) -> jnp.ndarray:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> jnp.ndarray:
        return jnp.exp(self.logvar)

    def sample(self, rng: jax.Array) -> jnp.ndarray:
        """A reparameterised draw ``mean + std * eps``, ``eps ~ N(0, I)``."""
        eps = jax.random.normal(rng, self.mean.shape, jnp.float32).astype(self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> jnp.ndarray:
        return self.mean

    def kl(self) -> jnp.ndarray:
        """KL(q || N(0, I)) summed over all non-batch axes: shape ``(B,)``, float32."""
        m, lv = self.mean.astype(jnp.float32), self.logvar.astype(jnp.float32)
        axes = tuple(range(1, m.ndim))
        return 0.5 * jnp.sum(jnp.square(m) + jnp.exp(lv) - 1.0 - lv, axis=axes)
