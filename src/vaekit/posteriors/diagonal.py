"""A Gaussian posterior with one standard deviation per latent dimension."""

from __future__ import annotations

from torch import Tensor

from . import POSTERIORS, Posterior


@POSTERIORS.register
class DiagonalGaussian(Posterior):
    """diagonal: one std per latent dimension; phi = [K means, K log stds], P = 2K"""

    name = "diagonal"

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        k = phi.shape[1] // 2
        return phi[:, :k], phi[:, k:]  # [B, K], [B, K]
