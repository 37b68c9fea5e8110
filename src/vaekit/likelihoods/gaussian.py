"""N(x; out, sigma_x^2 I): the assignment's Gaussian decoder with one scalar sigma_x for all pixels."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import log_prob
from . import LIKELIHOODS, Likelihood


@LIKELIHOODS.register
class Gaussian(Likelihood):
    """gaussian: N(x; out, sigma_x^2 I) with one scalar sigma_x for all pixels (the assignment's); out is the mean"""

    name = "gaussian"
    has_scale = True
    explorer_mean_js = "function (v) { return v; }"
    mean_description = "the decoder's output (Gaussian likelihood), clipped to [0, 1] for display"

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return log_prob(x, out, log_sig_x.to(x.dtype).reshape(1, 1).expand(b, n))  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return out

    def calibrated_log_sig_x(self, x: Tensor, out: Tensor, batch_mean: Callable[[Tensor], Tensor]) -> Tensor:
        # "calibrated decoder" (Rybkin et al. 2021): argmax_sigma sum log N(x; mu, sigma^2) is sigma^2 = MSE
        mse = batch_mean((x - out).detach().pow(2))  # []
        return 0.5 * torch.log(mse.clamp_min(1e-12))
