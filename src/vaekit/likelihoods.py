"""Likelihoods p(x|z): how the decoder's output becomes a log-likelihood and a mean image.

Every ``log_prob`` is in nats, summed over the D pixels, for images x [B, N, D] and decoder
outputs [B, N, D]. A new likelihood is one class here plus its entry in ``LIKELIHOODS``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .distributions import cb_mean, log_bernoulli, log_continuous_bernoulli, log_prob

__all__ = ["Likelihood", "Gaussian", "Bernoulli", "ContinuousBernoulli", "LIKELIHOODS", "make_likelihood"]


class Likelihood:
    """p(x|z) given the decoder's output ``out`` for z."""

    name = ""
    #: True if p(x|z) has the scalar scale sigma_x (the VAE's ``log_sig_x``), learned or calibrated
    has_scale = False
    #: True for a probability of discrete (binary) data; False for a density of pixel values in [0, 1]
    discrete = False

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        """log p(x|z) [B, N] for x [B, N, D] and decoder outputs [B, N, D]."""
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        """E[x|z] from decoder outputs of any shape (elementwise)."""
        raise NotImplementedError

    def calibrated_log_sig_x(self, x: Tensor, out: Tensor, batch_mean: Callable[[Tensor], Tensor]) -> Tensor | None:
        """The scale that maximizes this batch's likelihood, or None if there is no scale."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gaussian(Likelihood):
    """N(x; out, sigma_x^2 I) with one scalar sigma_x for all pixels (the assignment's); out is the mean."""

    name = "gaussian"
    has_scale = True

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return log_prob(x, out, log_sig_x.to(x.dtype).reshape(1, 1).expand(b, n))  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return out

    def calibrated_log_sig_x(self, x: Tensor, out: Tensor, batch_mean: Callable[[Tensor], Tensor]) -> Tensor:
        # "calibrated decoder" (Rybkin et al. 2021): argmax_sigma sum log N(x; mu, sigma^2) is sigma^2 = MSE
        mse = batch_mean((x - out).detach().pow(2))  # []
        return 0.5 * torch.log(mse.clamp_min(1e-12))


class Bernoulli(Likelihood):
    """prod_d Bernoulli(x_d; sigmoid(out_d)): out are logits; for binary images."""

    name = "bernoulli"
    discrete = True

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        return log_bernoulli(x, out)  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)


class ContinuousBernoulli(Likelihood):
    """prod_d CB(x_d; sigmoid(out_d)) (Loaiza-Ganem & Cunningham 2019): BCE made a proper density on [0, 1]."""

    name = "continuous-bernoulli"

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        return log_continuous_bernoulli(x, out)  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return cb_mean(out)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "gaussian": Gaussian,
    "bernoulli": Bernoulli,
    "continuous-bernoulli": ContinuousBernoulli,
}


def make_likelihood(likelihood: str | Likelihood) -> Likelihood:
    """A likelihood from its registry name (or an instance, returned as is)."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    return LIKELIHOODS[likelihood]()
