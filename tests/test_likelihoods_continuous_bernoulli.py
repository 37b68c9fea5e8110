"""The continuous Bernoulli likelihood against torch.distributions and numerical integration."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import ContinuousBernoulli as TorchCB
from torch.distributions import Independent

from vaekit.distributions import cb_mean, log_cb_normalizer
from vaekit.likelihoods.continuous_bernoulli import ContinuousBernoulli

B, N, D = 3, 4, 5


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    out = 3 * torch.randn(B, N, D, generator=g, dtype=torch.float64)
    return x, out


def simpson(f, n=20_000):
    """int_0^1 f(t) dt by Simpson's rule on n intervals (float64)."""
    t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    w = torch.ones(n + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return (f(t) * w).sum() / (3 * n)


def test_continuous_bernoulli_matches_torch_distributions():
    x, out = data(3)
    got = ContinuousBernoulli().log_prob(x, out, torch.zeros(()))
    ref = Independent(TorchCB(logits=out), 1).log_prob(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-9)
    # the mean, away from 1/2 where torch's own formula is accurate
    torch.testing.assert_close(ContinuousBernoulli().mean(out), TorchCB(logits=out).mean, rtol=0, atol=1e-9)


@pytest.mark.parametrize("lam", [0.5, 0.5 + 1e-9, 0.5 - 1e-7, 0.5 + 1e-4, 0.5 - 3e-3, 0.5 + 0.02, 0.3, 0.01, 0.999])
def test_continuous_bernoulli_normalizer_and_mean_match_numerical_integration(lam):
    """C(lambda) = 1 / int_0^1 lambda^x (1 - lambda)^(1 - x) dx, also at and near 1/2 where the formula is 0/0."""
    lam_t = torch.tensor(lam, dtype=torch.float64)
    logit = torch.log(lam_t) - torch.log1p(-lam_t)
    density = lambda t: lam_t**t * (1 - lam_t) ** (1 - t)
    integral = simpson(density)
    torch.testing.assert_close(log_cb_normalizer(logit), -torch.log(integral), rtol=0, atol=1e-12)
    mean = simpson(lambda t: t * density(t)) / integral
    torch.testing.assert_close(cb_mean(logit), mean, rtol=0, atol=1e-12)


def test_continuous_bernoulli_is_smooth_through_one_half():
    """No jump where the Taylor branch meets the closed form, and finite gradients at 1/2."""
    logits = torch.tensor([-1e-2 - 1e-9, -1e-2 + 1e-9, 0.0, 1e-2 - 1e-9, 1e-2 + 1e-9], dtype=torch.float64, requires_grad=True)
    values = log_cb_normalizer(logits)
    # across the branch point the value moves by slope x 2e-9 = 3.3e-12; a jump would show far above that
    assert abs(values[0] - values[1]) < 1e-11 and abs(values[3] - values[4]) < 1e-11
    values.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert abs(logits.grad[2].item()) < 1e-12  # log C is even in the logit: zero slope at 1/2
    m = cb_mean(logits.detach())
    assert abs(m[0] - m[1]) < 1e-9 and m[2].item() == 0.5  # slope 1/12: moves by 1.7e-10


