"""prod_d Bernoulli(x_d; sigmoid(out_d)): the decoder gives logits; for binary (binarized) images."""

from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import log_bernoulli
from . import LIKELIHOODS, Likelihood

SIGMOID_JS = "function (v) { return v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v)); }"


@LIKELIHOODS.register
class Bernoulli(Likelihood):
    """bernoulli: prod_d Bernoulli(x_d; sigmoid(out_d)), out are logits; for binarized images"""

    name = "bernoulli"
    discrete = True
    explorer_mean_js = SIGMOID_JS
    mean_description = "sigmoid of the decoder's logits (Bernoulli likelihood)"

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        return log_bernoulli(x, out)  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)
