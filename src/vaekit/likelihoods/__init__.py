"""Likelihoods p(x|z): how the decoder's output becomes a log-likelihood and a mean image.

One file per likelihood in this package, each a ``Likelihood`` registered in ``LIKELIHOODS``
(``--likelihood NAME``). Every ``log_prob`` is in nats, summed over the D pixels, for images
x [B, N, D] and decoder outputs [B, N, D].
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from ..registry import Part, Registry

__all__ = ["Likelihood", "LIKELIHOODS", "make_likelihood"]


class Likelihood(Part):
    """p(x|z) given the decoder's output ``out`` for z."""

    #: True if p(x|z) has the scalar scale sigma_x (the VAE's ``log_sig_x``), learned or calibrated
    has_scale = False
    #: True for a probability of discrete (binary) data; False for a density of pixel values in [0, 1]
    discrete = False
    #: E[x|z] in the report's latent explorer: a JavaScript function of one decoder output (a number)
    #: returning the mean pixel, applied to every output; None: the explorer cannot show this likelihood
    explorer_mean_js: str | None = None
    #: what the explorer's image shows, in a few words
    mean_description = "the mean image E[x|z]"

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()

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


LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood", Likelihood, package=__name__)


def make_likelihood(likelihood: str | Likelihood, options: dict | None = None) -> Likelihood:
    """A likelihood from its registry name and options (or an instance, returned as is)."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    return LIKELIHOODS[likelihood](LIKELIHOODS.options(likelihood, options))
