"""Objectives against known answers: the assignment's numbers, torch.distributions, and the closed-form
log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from helpers import TOL, grey_images, model_terms, ref_terms, tiny
from vaekit import VAE, SimpleVAE
from vaekit.checkpoint import load_weights
from vaekit.config import TrainConfig
from vaekit.objectives import OBJECTIVES, elbo, iwae
from vaekit.train import kl_beta

FIXTURES = Path(__file__).parent / "fixtures"
CASES = [f"{lik}-{post}-{cal}" for lik in ("gaussian", "bernoulli") for post in ("isotropic", "diagonal") for cal in ("learned", "cal")]


@pytest.mark.parametrize("case", CASES)
def test_beta_one_reproduces_the_losses_of_vaekit_0_1(case):
    """The per-image terms SimpleVAE.elbo_terms gave before the model was made of parts (fixture written then),
    to float32 rounding: bit-for-bit on the 2-core AVX2 CPU that wrote the fixture, but another CPU's
    convolution kernels round differently (an AVX-512 Xeon with torch 2.11 differed in the last bits)."""
    saved, _ = load_weights(FIXTURES / "losses_v0_1.safetensors")
    likelihood, posterior, cal = case.split("-")
    model = SimpleVAE(K=3, num_filters=4, likelihood=likelihood, posterior=posterior)
    model.load_state_dict({k[len(f"{case}/state/") :]: v for k, v in saved.items() if k.startswith(f"{case}/state/")})
    torch.manual_seed(5)
    x = saved[f"{case}/x"]
    if likelihood == "bernoulli":  # the fixture drew the binary images from the seeded RNG first
        assert torch.equal(torch.bernoulli(saved["x"]), x)
    terms = elbo(model, x, samples=4, calibrated=cal == "cal")
    for name in ("loss", "rec", "kl", "log_sig_x"):
        torch.testing.assert_close(getattr(terms, name).detach(), saved[f"{case}/{name}"], msg=name)
    assert torch.equal(terms.elbo, -terms.loss)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_images_and_noise_on_the_cpu_follow_the_models_device(objective, likelihood):
    """A model moved to another device (here "meta", which has no data, as a GPU stands in for it) gets
    images and noise from the CPU: the objective moves them, and its terms are on the model's device."""
    from helpers import SIZE

    model = tiny(likelihood=likelihood).to("meta")
    x = torch.rand(3, 1, SIZE, SIZE).round()  # [B, C, H, W] on the CPU
    eps = torch.randn(2, 3, 2)  # [N, B, K] on the CPU
    terms = OBJECTIVES[objective](model, x, samples=2, eps=eps)
    assert terms.loss.device.type == "meta" and terms.loss.shape == (3,)


class Linear(nn.Module):
    def __init__(self, weight, bias, out_shape=None):
        super().__init__()
        self.weight, self.bias, self.out_shape = weight, bias, out_shape

    def forward(self, x):
        y = x.reshape(x.shape[0], -1) @ self.weight.T + self.bias
        return y if self.out_shape is None else y.reshape(y.shape[0], *self.out_shape)


def linear_gaussian(seed=0, k=2, shape=(1, 2, 3), sigma=0.6, posterior="diagonal"):
    """x = W z + b + sigma noise; q(z|x) a linear map of x near, but not at, the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    p = k + 1 if posterior == "isotropic" else 2 * k
    cov = torch.linalg.inv(torch.eye(k, dtype=torch.float64) + W.T @ W / sigma**2)  # the exact posterior's
    gain = 0.6 * cov @ W.T / sigma**2  # [K, D], 0.6 x the exact posterior mean's
    A = torch.cat([gain, torch.zeros(p - k, d, dtype=torch.float64)])  # [P, D]
    log_s = 0.5 * torch.log(torch.diagonal(cov)) + 0.7  # twice too wide
    c = torch.cat([-gain @ b, log_s if p == 2 * k else log_s.mean().reshape(1)])
    model = VAE(Linear(A, c), Linear(W, b, shape), k, posterior=posterior, image_shape=shape).double()
    with torch.no_grad():
        model.log_sig_x.fill_(math.log(sigma))
    x = (torch.randn(8, k, generator=g, dtype=torch.float64) @ W.T + b + sigma * torch.randn(8, d, generator=g, dtype=torch.float64))
    exact = MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(d, dtype=torch.float64)).log_prob(x)  # [8]
    return model, x.reshape(8, *shape), exact


def reference_log_w(model, x, z):
    """log p(x|z) + log p(z) - log q(z|x) for z [B, N, K], with torch.distributions."""
    phi = model.encoder(x)
    k = model.latent_dim
    mu, sig = phi[:, :k], phi[:, k:].exp().expand(-1, k)
    q = Independent(Normal(mu[:, None], sig[:, None]), 1)
    prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
    out = model.decoder(z.reshape(-1, k)).reshape(*z.shape[:2], -1)
    px = Independent(Normal(out, model.log_sig_x.exp()), 1)
    return px.log_prob(x.reshape(x.shape[0], 1, -1)) + prior.log_prob(z) - q.log_prob(z)  # [B, N]


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


def test_beta_weights_only_the_kl_and_the_elbo_stays_the_bound():
    model, x, _ = linear_gaussian(seed=2)
    eps = torch.randn(3, 8, 2, dtype=torch.float64)
    one, four = elbo(model, x, samples=3, eps=eps), elbo(model, x, samples=3, eps=eps, beta=4.0)
    torch.testing.assert_close(four.loss, 4.0 * one.kl - one.rec, rtol=0, atol=1e-12)
    assert torch.equal(four.elbo, one.elbo) and torch.equal(one.elbo, one.rec - one.kl)
    # the exact KL against torch.distributions
    phi = model.encode(x)
    q = Normal(phi[:, :2], phi[:, 2:].exp())
    ref_kl = torch.distributions.kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc))).sum(dim=1)
    torch.testing.assert_close(one.kl, ref_kl, rtol=0, atol=1e-12)


def test_kl_warmup_rises_linearly_from_zero_to_beta():
    cfg = TrainConfig(beta=2.0, kl_warmup=100)
    assert [kl_beta(cfg, s) for s in (0, 25, 50, 100, 1000)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_beta(TrainConfig(beta=3.0), 0) == 3.0


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_gives_per_image_terms_and_gradients(name):
    torch.manual_seed(0)
    model = SimpleVAE(K=2, num_filters=4)
    x = torch.rand(5, 1, 28, 28)
    terms = OBJECTIVES[name](model, x, samples=3, calibrated=True)
    assert all(t.shape == (5,) for t in (terms.loss, terms.elbo, terms.rec, terms.kl))
    terms.loss.mean().backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0 and model.decoder[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the ELBO of SimpleVAE's options


def test_calibrated_sigma_is_the_optimum():
    torch.manual_seed(0)
    m = SimpleVAE(num_filters=4).double()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(1)
    terms = elbo(m, x, samples=3, calibrated=True)
    torch.manual_seed(1)
    mu = m(x, 3)  # the same z, so the same reconstructions
    mse = (mu - x[:, None]).pow(2).mean()
    torch.testing.assert_close(terms.log_sig_x, 0.5 * mse.log())
    # the reconstruction term is largest at that sigma
    for factor in (0.9, 1.1):
        with torch.no_grad():
            m.log_sig_x.fill_(terms.log_sig_x.item() + torch.tensor(factor).log().item())
        torch.manual_seed(1)
        assert elbo(m, x, samples=3).rec.sum() < terms.rec.sum()


def test_elbo_objective_under_bf16_autocast_keep_the_data_dtype():
    torch.manual_seed(0)
    m = SimpleVAE(num_filters=4)
    x = torch.rand(8, 1, 28, 28)
    for calibrated in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = elbo(m, x, samples=2, calibrated=calibrated)
        assert terms.loss.dtype == torch.float32 and torch.isfinite(terms.loss).all()
        terms.loss.mean().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())



@pytest.mark.parametrize(
    "likelihood,posterior", [("bernoulli", "isotropic"), ("bernoulli", "diagonal"), ("gaussian", "diagonal")]
)
def test_elbo_terms_match_reference(likelihood, posterior):
    model = tiny(K=3, likelihood=likelihood, posterior=posterior).double()
    x = grey_images(4, seed=1).double()
    if likelihood == "bernoulli":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a visible log_sig_x, so that a Gaussian decoder does not hide behind sigma_x = 1
        model.log_sig_x.fill_(-0.7)
    terms = model_terms(model, x, 3, seed=21)
    rec, kl, _ = ref_terms(model, x, 3, seed=21)
    torch.testing.assert_close(terms.rec, rec, **TOL[torch.float64])
    torch.testing.assert_close(terms.kl, kl, **TOL[torch.float64])
    torch.testing.assert_close(terms.loss, kl - rec, **TOL[torch.float64])
    # the noise matters: another seed gives another reconstruction term
    assert not torch.allclose(model_terms(model, x, 3, seed=22).rec, rec)
