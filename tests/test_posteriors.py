"""The posterior kind's contract, run over every registered posterior: sampling, density and KL against
torch.distributions on the posterior's own means and standard deviations, the given noise, gradients."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.posteriors import POSTERIORS, Posterior, make_posterior

K, B = 3, 4


def phi_for(name, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, make_posterior(name).num_params(K), generator=g, dtype=torch.float64)


def reference(post, phi):
    """q(z|x) as torch.distributions, from the posterior's own split of phi."""
    mu, log_s = post.split(phi)
    assert mu.shape == (phi.shape[0], K) and log_s.shape in ((phi.shape[0], 1), (phi.shape[0], K))
    return Independent(Normal(mu, log_s.expand_as(mu).exp()), 1)


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_sampling_density_and_kl_match_torch(name):
    post, phi = make_posterior(name), phi_for(name)
    assert isinstance(post, Posterior) and post.name == name
    q = reference(post, phi)
    torch.manual_seed(7)
    z = post.rsample(phi, 5)  # [B, N, K]
    torch.manual_seed(7)
    assert torch.equal(z, q.base_dist.rsample([5]).permute(1, 0, 2))  # the same noise, [N, B, K]
    torch.testing.assert_close(post.log_prob(z, phi), q.log_prob(z.permute(1, 0, 2)).T, rtol=0, atol=1e-12)
    prior = Independent(Normal(torch.zeros(B, K, dtype=torch.float64), torch.ones(B, K, dtype=torch.float64)), 1)
    torch.testing.assert_close(post.kl(phi), kl_divergence(q, prior), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_given_noise_is_used_and_gradients_reach_the_parameters(name):
    post, phi = make_posterior(name), phi_for(name).requires_grad_()
    eps = torch.randn(2, B, K, dtype=torch.float64)
    mu, log_s = post.split(phi)
    torch.testing.assert_close(post.rsample(phi, 2, eps), (mu + eps * log_s.exp()).permute(1, 0, 2))
    post.rsample(phi, 2, eps).sum().backward()
    assert (phi.grad.abs() > 0).all()
    with pytest.raises(ValueError, match=r"eps must have shape \[N=2, B=4, K=3\]"):
        post.rsample(phi, 2, eps[:, :3])


def test_unknown_posterior_is_refused():
    with pytest.raises(ValueError, match="posterior must be one of .*isotropic.*, got 'full'"):
        make_posterior("full")
