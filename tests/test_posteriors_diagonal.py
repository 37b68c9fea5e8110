"""The diagonal posterior: [K means, K log stds], one std per latent dimension."""

from __future__ import annotations

import torch
from torch.distributions import Normal

from vaekit.posteriors.diagonal import DiagonalGaussian


def test_layout_is_k_means_then_k_log_stds():
    post = DiagonalGaussian()
    assert post.num_params(3) == 6
    phi = torch.arange(12.0).reshape(2, 6)
    mu, log_s = post.split(phi)
    assert torch.equal(mu, phi[:, :3]) and torch.equal(log_s, phi[:, 3:])


def test_each_dimension_has_its_own_scale():
    phi = torch.tensor([[0.0, 0.0, -2.0, 1.0]], dtype=torch.float64)  # K = 2, sigma = (e^-2, e^1)
    z = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)  # [B, N, K]
    ref = Normal(torch.zeros(2, dtype=torch.float64), torch.tensor([-2.0, 1.0], dtype=torch.float64).exp()).log_prob(z[0, 0]).sum()
    torch.testing.assert_close(DiagonalGaussian().log_prob(z, phi)[0, 0], ref)
