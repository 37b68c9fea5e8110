"""The Gaussian likelihood against torch.distributions."""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal

from vaekit.likelihoods.gaussian import Gaussian

B, N, D = 3, 4, 5


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    out = 3 * torch.randn(B, N, D, generator=g, dtype=torch.float64)
    return x, out


def test_gaussian_is_normal_with_one_scale():
    x, out = data()
    got = Gaussian().log_prob(x, out, torch.tensor(-0.4, dtype=torch.float64))
    ref = Independent(Normal(out, math.exp(-0.4)), 1).log_prob(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert torch.equal(Gaussian().mean(out), out)


def test_gaussian_calibrated_scale_is_the_maximum_likelihood_one():
    x, out = data(1)
    log_sig = Gaussian().calibrated_log_sig_x(x, out, torch.Tensor.mean)
    grid = log_sig + torch.linspace(-0.05, 0.05, 11, dtype=torch.float64)
    values = torch.stack([Gaussian().log_prob(x, out, s).sum() for s in grid])
    assert values.argmax().item() == 5  # the middle of the grid: the maximum


