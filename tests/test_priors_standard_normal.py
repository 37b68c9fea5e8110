"""N(0, I): log p(z) against torch.distributions, no parameters (so the assignment's state_dicts load),
and generate_images' numbers (randn(X, 1, K))."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

from vaekit.priors.standard_normal import StandardNormal

from helpers import tiny


def test_log_prob_is_the_standard_normal_and_it_has_no_parameters():
    prior = StandardNormal(3)
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    ref = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z, None), ref, rtol=0, atol=1e-12)
    assert list(prior.parameters()) == [] and prior.state_dict() == {}


def test_samples_are_randn_in_the_models_dtype():
    model = tiny(K=3).double()
    torch.manual_seed(4)
    z = model.prior.sample(6, model)
    torch.manual_seed(4)
    assert torch.equal(z, torch.randn(6, 1, 3, dtype=torch.float64)[:, 0])
