"""The batched float32 log-likelihood against a float64 brute-force estimator, and the dequantized
8-bit bits/dim against the closed form of a factorized Gaussian. (Moves into test_evaluation.py.)"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit import VAE, SimpleVAE, evaluate, log_likelihood


def brute_force_log_likelihood(model, x, k, seed):
    """log p(x) by importance sampling, one image at a time, all in float64 with torch.distributions."""
    g = torch.Generator().manual_seed(seed)
    m64 = SimpleVAE(K=model.latent_dim, num_filters=model.encoder[0].out_channels).double()
    m64.load_state_dict({n: t.double() for n, t in model.state_dict().items()})
    out = []
    with torch.no_grad():
        for xi in x.double():
            phi = m64.encoder(xi[None])[0]
            mu, sig = phi[:-1], phi[-1].exp()
            z = mu + sig * torch.randn(k, mu.shape[0], generator=g, dtype=torch.float64)  # [k, K]
            mean = m64.decoder(z).flatten(1)  # [k, D]
            log_px = Independent(Normal(mean, m64.log_sig_x.exp()), 1).log_prob(xi.flatten())  # [k]
            log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(1) - Normal(mu, sig).log_prob(z).sum(1)  # [k]
            out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(out)


def test_batched_estimate_agrees_with_the_float64_brute_force_one(mnist):
    torch.manual_seed(0)
    model = SimpleVAE(K=2, num_filters=4)
    with torch.no_grad():
        model.log_sig_x.fill_(-1.5)
    x = mnist.test_images[:10]
    fast = log_likelihood(model, x, k=200, seed=1, max_decodes=700)  # several chunks of samples
    ref = brute_force_log_likelihood(model, x, k=200, seed=2)
    diff = fast - ref  # [10]: different noise, the same quantity
    assert abs(diff.mean().item()) < 3 * diff.std().item() / math.sqrt(len(diff)) + 1e-3


class Zeros(nn.Module):
    """q(z|x) = N(0, I) whatever x: [B, C, H, W] -> [B, K+1] zeros."""

    def forward(self, x):
        return x.new_zeros(x.shape[0], 2)


class Constant(nn.Module):
    """A decoder that ignores z: the per-pixel means of a factorized Gaussian."""

    def __init__(self, mean):
        super().__init__()
        self.mean = mean

    def forward(self, z):
        return self.mean.expand(z.shape[0], *self.mean.shape)


def test_dequantized_bits_per_dim_of_a_factorized_gaussian_match_the_closed_form(mnist):
    """p(x) = prod_d N(x_d; mu_d, sigma^2), fitted to the pixels: E_u[-log p(x + u)] has a closed form."""
    train, test = mnist.train_images[:2000].double(), mnist.test_images[:200].double()
    mu = train.mean(dim=0)  # [1, 28, 28]
    sigma = (train - mu).pow(2).mean().sqrt()  # one scale for all pixels (maximum likelihood)
    model = VAE(Zeros(), Constant(mu), 1, image_shape=(1, 28, 28)).double()
    with torch.no_grad():
        model.log_sig_x.fill_(sigma.log().item())
    result = evaluate(model, test, k=4, n_samples=1)
    # E_u (x + u - mu)^2 = (x + 1/512 - mu)^2 + 1/(12 * 256^2) for u ~ U[0, 1/256)
    sq = (test + 1 / 512 - mu).pow(2) + 1 / (12 * 256**2)
    nll = (0.5 * torch.log(2 * math.pi * sigma**2) + sq / (2 * sigma**2)).flatten(1).sum(dim=1)  # [200] nats
    closed_form = (nll / (784 * math.log(2)) + 8).mean().item()
    assert abs(result["bits_per_dim_8bit"] - closed_form) < 1e-4
    assert 6 < result["bits_per_dim_8bit"] < 9  # a weak model of 8-bit MNIST, and no sign or unit slip
    # and the density itself is exact here too (q is the prior and p(x|z) does not depend on z)
    exact = Independent(Normal(mu.flatten(), sigma), 1).log_prob(test.flatten(1)).mean().item()
    assert abs(result["log_likelihood"] - exact) < 1e-6


def test_a_bernoulli_model_has_no_8bit_figure():
    model = SimpleVAE(K=2, num_filters=2, likelihood="bernoulli")
    result = evaluate(model, torch.bernoulli(torch.full((3, 1, 28, 28), 0.3)), k=2, n_samples=1)
    assert "bits_per_dim_8bit" not in result and result["decodes"] == 6
