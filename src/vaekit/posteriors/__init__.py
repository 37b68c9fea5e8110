"""Posteriors q(z|x): how the encoder's output [B, P] becomes a Gaussian over the latent z [B, K].

One file per posterior in this package, each a ``Posterior`` registered in ``POSTERIORS``
(``--posterior NAME``). A posterior owns the packing of its parameters, reparameterized
sampling, its log density and the KL to N(0, I), all in nats.
"""

from __future__ import annotations

from torch import Tensor

from ..distributions import kl_diag_std_normal, log_prob_diag, rsample_diag
from ..registry import Part, Registry

__all__ = ["Posterior", "POSTERIORS", "make_posterior"]


class Posterior(Part):
    """A Gaussian q(z|x) = N(mu, diag(sigma^2)) read from the encoder's output ``phi`` [B, P]."""

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()

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


POSTERIORS: Registry[type[Posterior]] = Registry("posterior", Posterior, package=__name__)


def make_posterior(posterior: str | Posterior, options: dict | None = None) -> Posterior:
    """A posterior from its registry name and options (or an instance, returned as is)."""
    if isinstance(posterior, Posterior):
        return posterior
    return POSTERIORS[posterior](POSTERIORS.options(posterior, options))
