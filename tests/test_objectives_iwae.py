"""The IWAE objective against brute force and the closed-form log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.objectives import make_objective

from helpers import linear_gaussian, reference_log_w


def iwae(model, x, samples=1, **kw):
    return make_objective("iwae", {"iw_samples": samples})(model, x, **kw)


@pytest.mark.parametrize("posterior", ["isotropic", "diagonal"])
def test_iwae_with_one_sample_is_the_elbo_on_the_same_noise(posterior):
    model, x, _ = linear_gaussian(posterior=posterior)
    eps = torch.randn(1, 8, 2, dtype=torch.float64)
    terms = iwae(model, x, samples=1, eps=eps)
    z = model.posterior.rsample(model.encode(x), 1, eps)  # [B, 1, K]
    ref = reference_log_w(model, x, z)[:, 0]  # the one-sample ELBO estimate
    torch.testing.assert_close(terms.loss, -ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms.elbo, ref, rtol=0, atol=1e-10)


def test_iwae_is_the_logmeanexp_of_the_importance_weights():
    model, x, _ = linear_gaussian(seed=3)
    eps = torch.randn(7, 8, 2, dtype=torch.float64)
    terms = iwae(model, x, samples=7, eps=eps)
    z = model.posterior.rsample(model.encode(x), 7, eps)
    log_w = reference_log_w(model, x, z)  # [B, 7]
    brute = torch.tensor([math.log(sum(math.exp(v) for v in row) / 7) for row in log_w.tolist()], dtype=torch.float64)
    torch.testing.assert_close(-terms.loss, brute, rtol=0, atol=1e-9)
    torch.testing.assert_close(terms.elbo, log_w.mean(dim=1), rtol=0, atol=1e-10)


def test_iwae_bound_rises_with_k_and_stays_below_the_exact_log_likelihood():
    model, x, exact = linear_gaussian(seed=1)
    torch.manual_seed(0)
    means, ses = {}, {}
    with torch.no_grad():
        for k in (1, 4, 16, 64):
            bounds = torch.stack([-iwae(model, x, samples=k).loss.mean() for _ in range(300)])  # [300] over the 8 images
            means[k], ses[k] = bounds.mean().item(), bounds.std().item() / math.sqrt(300)
    for k_small, k_big in ((1, 4), (4, 16), (16, 64)):
        assert means[k_big] - means[k_small] > 3 * math.hypot(ses[k_big], ses[k_small]), (k_small, k_big, means, ses)
    exact_mean = exact.mean().item()
    assert means[64] < exact_mean + 3 * ses[64]  # a lower bound in expectation
    assert exact_mean - means[64] < 0.2 * (exact_mean - means[1])  # that tightens towards log p(x)


