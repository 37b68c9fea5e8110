"""Posteriors against torch.distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.posteriors import POSTERIORS, make_posterior

K = 3


def phi_for(name, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = make_posterior(name).num_params(K)
    return torch.randn(b, p, generator=g, dtype=torch.float64)


def reference(name, phi):
    mu = phi[:, :K]
    log_s = phi[:, K:] if name == "diagonal" else phi[:, K:].expand(-1, K)
    return Independent(Normal(mu, log_s.exp()), 1)


@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_sampling_density_and_kl_match_torch(name):
    post, phi = make_posterior(name), phi_for(name)
    assert post.num_params(K) == {"isotropic": K + 1, "diagonal": 2 * K}[name]
    q = reference(name, phi)
    torch.manual_seed(7)
    z = post.rsample(phi, 5)  # [B, N, K]
    torch.manual_seed(7)
    assert torch.equal(z, q.base_dist.rsample([5]).permute(1, 0, 2))  # the same noise, [N, B, K]
    torch.testing.assert_close(post.log_prob(z, phi), q.log_prob(z.permute(1, 0, 2)).T, rtol=0, atol=1e-12)
    prior = Independent(Normal(torch.zeros(4, K, dtype=torch.float64), torch.ones(4, K, dtype=torch.float64)), 1)
    torch.testing.assert_close(post.kl(phi), kl_divergence(q, prior), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_given_noise_is_used_and_gradients_reach_the_parameters(name):
    post, phi = make_posterior(name), phi_for(name).requires_grad_()
    eps = torch.randn(2, 4, K, dtype=torch.float64)
    mu, log_s = post.split(phi)
    torch.testing.assert_close(post.rsample(phi, 2, eps), (mu + eps * log_s.exp()).permute(1, 0, 2))
    post.rsample(phi, 2, eps).sum().backward()
    assert (phi.grad.abs() > 0).all()


def test_unknown_posterior_is_refused():
    with pytest.raises(ValueError, match="posterior must be one of isotropic, diagonal, got 'full'"):
        make_posterior("full")
