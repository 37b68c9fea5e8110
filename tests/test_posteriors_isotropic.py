"""The isotropic posterior: the assignment's layout [K means, one log std] and its functions."""

from __future__ import annotations

import torch

from vaekit.distributions import kl_q_p_exact, rsample
from vaekit.posteriors.isotropic import IsotropicGaussian


def test_layout_is_k_means_then_one_log_std():
    post = IsotropicGaussian()
    assert post.num_params(3) == 4
    phi = torch.arange(8.0).reshape(2, 4)
    mu, log_s = post.split(phi)
    assert torch.equal(mu, phi[:, :3]) and torch.equal(log_s, phi[:, 3:])


def test_sampling_and_kl_are_the_assignments_functions():
    post, phi = IsotropicGaussian(), torch.randn(5, 3, dtype=torch.float64)
    torch.manual_seed(1)
    a = post.rsample(phi, 4)
    torch.manual_seed(1)
    assert torch.equal(a, rsample(phi, 4))
    assert torch.equal(post.kl(phi), kl_q_p_exact(phi, torch.zeros_like(phi)))
