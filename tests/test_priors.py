"""The prior kind's contract, run over every registered prior: log p(z) is a normalised density (its
integral over a 2-d grid is 1), samples follow it (their mean log density against the exact entropy
where there is one; the density's own moments otherwise), and a closed-form KL agrees with a Monte-Carlo one."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit import VAE
from vaekit.priors import PRIORS, Prior, make_prior

from helpers import tiny

K = 2


def model_with(name):
    torch.manual_seed(0)
    base = tiny(K=K).double()
    prior = make_prior(name, K, (1, 12, 12))
    return VAE(base.encoder, base.decoder, K, prior=prior.double(), image_shape=(1, 12, 12)).double()


@pytest.mark.parametrize("name", PRIORS.names())
def test_log_prob_is_a_normalised_density(name):
    model = model_with(name)
    assert isinstance(model.prior, Prior) and model.prior.name == name
    t = torch.linspace(-9, 9, 721, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(1, -1, K)  # [1, M, K]
    lp = model.log_p_z(grid)  # [1, M]
    assert lp.shape == (1, grid.shape[1])
    mass = lp.exp().sum().item() * (t[1] - t[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", PRIORS.names())
def test_samples_follow_the_density(name):
    model = model_with(name)
    torch.manual_seed(3)
    z = model.sample_z(20_000)  # [n, K]
    assert z.shape == (20_000, K) and z.dtype == torch.float64
    # E_p[z] by sampling against the same expectation on a grid of the density
    t = torch.linspace(-9, 9, 361, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, K)
    w = model.log_p_z(grid[None])[0].exp()
    w = w / w.sum()
    mean_grid = (w[:, None] * grid).sum(0)
    se = z.std(0) / math.sqrt(len(z))
    assert ((z.mean(0) - mean_grid).abs() < 4 * se + 1e-3).all()


@pytest.mark.parametrize("name", PRIORS.names())
def test_closed_form_kl_agrees_with_monte_carlo(name):
    model = model_with(name)
    phi = torch.randn(3, model.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kl = model.kl(phi)
    if kl is None:
        pytest.skip(f"prior {name} has no closed-form KL (the objectives estimate it)")
    torch.manual_seed(2)
    z = model.rsample_z(phi, 100_000)  # [B, n, K]
    mc = model.log_q(z, phi) - model.log_p_z(z)  # [B, n]
    assert ((kl - mc.mean(1)).abs() < 5 * mc.std(1) / math.sqrt(mc.shape[1])).all()


def test_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="prior must be one of .*standard-normal.*, got 'laplace'"):
        make_prior("laplace", 2)
