"""Priors p(z) over the latent z [..., K]: one file per prior in this package, each a ``Prior``
registered in ``PRIORS`` (``--prior NAME``).

A prior is an ``nn.Module`` (a learned prior has parameters, saved with the model as ``prior.*``).
It gives log p(z) exactly (in nats), so the importance-sampled log-likelihood stays exact, draws
z ~ p(z), and, where one exists, the KL from a posterior in closed form. It is called with the
model, since a prior may be made of the model's own parts (the VampPrior encodes pseudo-inputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Part, Registry

__all__ = ["Prior", "PRIORS", "make_prior"]


class Prior(Part, nn.Module):
    """p(z) for latents of size K, for images of shape [C, H, W]."""

    #: True for a prior built from the model's own encoder (the VampPrior's q(z|u) at pseudo-inputs u), which a
    #: conditional model, whose encoder also needs each image's condition c, cannot take
    uses_encoder: bool = False

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int] | None = None, options: object | None = None):
        nn.Module.__init__(self)
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.options = options if options is not None else self.Options()

    def log_prob(self, z: Tensor, model: Any) -> Tensor:
        """log p(z) [B, N] for z [B, N, K], in nats."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, model: Any) -> Tensor:
        """n draws z ~ p(z) [n, K] from the global RNG, on the model's device."""
        raise NotImplementedError

    def kl(self, posterior: Any, phi: Tensor) -> Tensor | None:
        """KL(q(z|x) || p(z)) [B] in closed form for the posterior's parameters phi [B, P], or None where there
        is none (the objectives then estimate it on the samples of z)."""
        return None

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"


PRIORS: Registry[type[Prior]] = Registry("prior", Prior, package=__name__)


def make_prior(prior: str | Prior, latent_dim: int, image_shape: tuple[int, int, int] | None = None,
               options: dict | None = None) -> Prior:
    """A prior from its registry name and options (or an instance, returned as is)."""
    if isinstance(prior, Prior):
        return prior
    return PRIORS[prior](latent_dim, image_shape, PRIORS.options(prior, options))
