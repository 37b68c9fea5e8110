"""Posteriors q(z|x): how the encoder's output [B, P] becomes a Gaussian over the latent z [B, K].

Each posterior owns the packing of its parameters, reparameterized sampling, its log
density and the KL to the prior N(0, I), all in nats. A new posterior is one class here
plus its entry in ``POSTERIORS``.
"""

from __future__ import annotations

from torch import Tensor

from .distributions import kl_diag_std_normal, kl_q_p_exact, log_prob_diag, rsample, rsample_diag

__all__ = ["Posterior", "IsotropicGaussian", "DiagonalGaussian", "POSTERIORS", "make_posterior"]


class Posterior:
    """A Gaussian q(z|x) = N(mu, diag(sigma^2)) read from the encoder's output ``phi`` [B, P]."""

    name = ""

    def num_params(self, latent_dim: int) -> int:
        """P: the encoder's output size for latent size K."""
        raise NotImplementedError

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """phi [B, P] -> means [B, K] and log stds [B, 1] or [B, K]."""
        raise NotImplementedError

    def rsample(self, phi: Tensor, n: int, eps: Tensor | None = None) -> Tensor:
        """z = mu + sigma * eps: [B, N, K]; ``eps`` [N, B, K] or None (drawn from the global RNG)."""
        mu, log_sig = self.split(phi)
        return rsample_diag(mu, log_sig, n, eps)

    def kl(self, phi: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) [B], exact."""
        mu, log_sig = self.split(phi)
        return kl_diag_std_normal(mu, log_sig).sum(dim=1)

    def log_prob(self, z: Tensor, phi: Tensor) -> Tensor:
        """log q(z|x) [B, N] for z [B, N, K]."""
        mu, log_sig = self.split(phi)
        return log_prob_diag(z, mu[:, None, :], log_sig[:, None, :])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IsotropicGaussian(Posterior):
    """One std for all K dimensions (the assignment's): phi = [K means, one log std], P = K + 1."""

    name = "isotropic"

    def num_params(self, latent_dim: int) -> int:
        return latent_dim + 1

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        return phi[:, :-1], phi[:, -1:]  # [B, K], [B, 1]

    def rsample(self, phi: Tensor, n: int, eps: Tensor | None = None) -> Tensor:
        return rsample(phi, n, eps)  # the assignment's function: the same numbers as torch's Normal.rsample

    def kl(self, phi: Tensor) -> Tensor:
        return kl_q_p_exact(phi, phi.new_zeros(phi.shape))  # the assignment's closed form


class DiagonalGaussian(Posterior):
    """One std per latent dimension: phi = [K means, K log stds], P = 2K."""

    name = "diagonal"

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        k = phi.shape[1] // 2
        return phi[:, :k], phi[:, k:]  # [B, K], [B, K]


POSTERIORS: dict[str, type[Posterior]] = {"isotropic": IsotropicGaussian, "diagonal": DiagonalGaussian}


def make_posterior(posterior: str | Posterior) -> Posterior:
    """A posterior from its registry name (or an instance, returned as is)."""
    if isinstance(posterior, Posterior):
        return posterior
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
    return POSTERIORS[posterior]()
