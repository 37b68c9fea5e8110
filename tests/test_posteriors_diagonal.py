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


def test_bounded_log_std_is_clamped_and_gets_no_gradient_past_a_bound():
    post = DiagonalGaussian(DiagonalGaussian.Options(log_std_min=-3.0, log_std_max=1.0))
    phi = torch.tensor([[0.5, -0.5, -7.0, 2.5], [0.0, 0.0, -1.0, 0.25]], dtype=torch.float64, requires_grad=True)
    mu, log_s = post.split(phi)
    assert log_s.tolist() == [[-3.0, 1.0], [-1.0, 0.25]]
    z = torch.zeros(2, 1, 2, dtype=torch.float64)
    ref = Normal(mu.detach(), torch.tensor([[-3.0, 1.0], [-1.0, 0.25]], dtype=torch.float64).exp()).log_prob(z[:, 0]).sum(1)
    torch.testing.assert_close(post.log_prob(z, phi)[:, 0], ref)
    post.kl(phi).sum().backward()
    assert phi.grad[0, 2:].tolist() == [0.0, 0.0] and (phi.grad[1, 2:] != 0).all()


def test_one_sided_bounds_and_the_default_unbounded():
    phi = torch.tensor([[0.0, -9.0]])
    assert DiagonalGaussian().split(phi)[1].item() == -9.0
    assert DiagonalGaussian(DiagonalGaussian.Options(log_std_min=-6.0)).split(phi)[1].item() == -6.0
    assert DiagonalGaussian(DiagonalGaussian.Options(log_std_max=-10.0)).split(phi)[1].item() == -10.0


def test_bounds_out_of_order_or_not_finite_are_refused_with_the_config():
    import pytest

    from vaekit.config import ModelConfig

    with pytest.raises(ValueError, match="log_std_min must be < log_std_max, got 1.0 and -3.0"):
        DiagonalGaussian(DiagonalGaussian.Options(log_std_min=1.0, log_std_max=-3.0))
    with pytest.raises(ValueError, match="log_std_max must be a finite number or None, got nan"):
        DiagonalGaussian.Options(log_std_max=float("nan"))
    with pytest.raises(ValueError, match="log_std_min must be < log_std_max, got 2.0 and 1.0"):  # before any model is built
        ModelConfig(arch="mlp", posterior="diagonal", log_std_min=2.0, log_std_max=1.0).check_options()
