"""prod_d CB(x_d; sigmoid(out_d)) (Loaiza-Ganem & Cunningham 2019): the Bernoulli's cross-entropy made a
proper density on [0, 1], for grey pixels."""

from __future__ import annotations

from torch import Tensor

from ..distributions import cb_mean, log_continuous_bernoulli
from . import LIKELIHOODS, Likelihood

# E[x] = sigmoid(v) / tanh(v / 2) - 1 / v in logits v, and 1/2 + v/12 - v^3/720 for |v| < 1e-2 (as cb_mean)
CB_MEAN_JS = (
    "function (v) { if (Math.abs(v) < 1e-2) return 0.5 + v / 12 - v * v * v / 720;"
    " var l = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));"
    " return l / Math.tanh(v / 2) - 1 / v; }"
)


@LIKELIHOODS.register
class ContinuousBernoulli(Likelihood):
    """continuous-bernoulli: prod_d CB(x_d; sigmoid(out_d)), out are logits; a proper density for grey pixels"""

    name = "continuous-bernoulli"
    explorer_mean_js = CB_MEAN_JS
    mean_description = "the continuous Bernoulli mean of sigmoid(logits)"

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:
        return log_continuous_bernoulli(x, out)  # [B, N]

    def mean(self, out: Tensor) -> Tensor:
        return cb_mean(out)
