"""The importance-sampled log-likelihood and the evaluation numbers, against known answers.

The reference is a linear-Gaussian model, x = W z + b + sigma * noise with z ~ N(0, I),
whose marginal p(x) = N(b, W W^T + sigma^2 I) is known in closed form (computed here with
torch.distributions.MultivariateNormal), as are its exact posterior and any ELBO.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal, kl_divergence

from vaekit import VAE, SimpleVAE, evaluate, latent_stats, log_likelihood
from vaekit.evaluation import LIKELIHOOD_NOTE

D_SHAPE = (1, 2, 3)  # images [C, H, W], D = 6
D = 6


class LinearEncoder(nn.Module):
    """q(z|x) = N(A (x - b) + c, s^2 [I]): [B, C, H, W] -> [B, K+1] (isotropic) or [B, 2K] (diagonal)."""

    def __init__(self, A, b, c, log_s):
        super().__init__()
        self.A, self.b, self.c, self.log_s = A, b, c, log_s

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        mu = (flat - self.b) @ self.A.T + self.c  # [B, K]
        return torch.cat([mu, self.log_s.expand(x.shape[0], -1)], dim=1)


class LinearDecoder(nn.Module):
    """decode(z) = W z + b: [M, K] -> [M, C, H, W]."""

    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = W, b

    def forward(self, z):
        return (z @ self.W.T + self.b).reshape(z.shape[0], *D_SHAPE)


def LinearGaussian(W, b, log_sigma, A, c, log_s, posterior="isotropic"):
    """x = W z + b + sigma noise as a vaekit.VAE of two hand-written networks (a user's own nets)."""
    model = VAE(LinearEncoder(A, b, c, log_s), LinearDecoder(W, b), W.shape[1], posterior=posterior, image_shape=D_SHAPE).double()
    with torch.no_grad():
        model.log_sig_x.fill_(float(log_sigma))
    model.W, model.b = W, b
    return model


def _exact_log_px(model, x):
    sigma2 = model.log_sig_x.exp().item() ** 2
    cov = model.W @ model.W.T + sigma2 * torch.eye(D, dtype=torch.float64)
    return MultivariateNormal(model.b, covariance_matrix=cov).log_prob(x.reshape(x.shape[0], -1))  # [B]


def _exact_elbo(model, x):
    """E_q log N(x; Wz + b, sigma^2 I) - KL(q || N(0, I)), both in closed form."""
    flat = x.reshape(x.shape[0], -1)
    phi = model.encoder(x)
    k = model.K
    mu, log_s = phi[:, :k], phi[:, k:].expand(-1, k)  # [B, K], [B, K]
    s2 = torch.exp(2 * log_s)
    sigma2 = model.log_sig_x.exp() ** 2
    resid = flat - mu @ model.W.T - model.b  # [B, D]
    trace = (s2 * (model.W**2).sum(dim=0)).sum(dim=1)  # tr(W diag(s^2) W^T)
    rec = -0.5 * D * torch.log(2 * math.pi * sigma2) - (resid.pow(2).sum(dim=1) + trace) / (2 * sigma2)
    kl = kl_divergence(Normal(mu, s2.sqrt()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(dim=1)
    return rec - kl


def _orthogonal_model(norms, sigma=0.5, posterior="isotropic", seed=0):
    """W with orthogonal columns of the given norms; q set to the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    k = len(norms)
    Q, _ = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=torch.float64))
    W = Q * torch.tensor(norms, dtype=torch.float64)  # [D, K], W^T W = diag(norms^2)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    lam = 1 + torch.tensor(norms, dtype=torch.float64) ** 2 / sigma**2  # posterior precisions
    A = (W / (sigma**2 * lam)).T  # posterior mean = diag(1/lam) W^T (x - b) / sigma^2
    log_s = -0.5 * torch.log(lam)
    if posterior == "isotropic":
        assert torch.allclose(log_s, log_s[:1])
        log_s = log_s[:1]
    return LinearGaussian(W, b, math.log(sigma), A, torch.zeros(k, dtype=torch.float64), log_s, posterior)


def _data(model, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.K, generator=g, dtype=torch.float64)
    noise = torch.randn(n, D, generator=g, dtype=torch.float64) * model.log_sig_x.exp().item()
    return (z @ model.W.T + model.b + noise).reshape(n, *D_SHAPE)


@pytest.mark.parametrize("posterior, norms", [("isotropic", [1.5, 1.5]), ("diagonal", [0.5, 2.0, 1.0])])
@pytest.mark.parametrize("k", [1, 7, 100])
def test_exact_posterior_gives_the_exact_log_likelihood_at_any_k(posterior, norms, k):
    # with q(z|x) = p(z|x) every importance weight equals p(x): the estimator is exact
    model = _orthogonal_model(norms, posterior=posterior)
    x = _data(model, 20)
    got = log_likelihood(model, x, k=k, max_decodes=13)
    assert got.dtype == torch.float64 and got.shape == (20,)
    torch.testing.assert_close(got, _exact_log_px(model, x), rtol=0, atol=1e-9)


def _approximate_model(seed=0):
    """Non-orthogonal W and a deliberately imperfect isotropic q."""
    g = torch.Generator().manual_seed(seed)
    k = 2
    W = torch.randn(D, k, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    sigma = 0.7
    # the exact posterior mean map, then spoiled, with a too-small std
    prec = torch.eye(k, dtype=torch.float64) + W.T @ W / sigma**2
    A = torch.linalg.solve(prec, W.T) / sigma**2 * 0.9
    log_s = torch.tensor([-0.5 * math.log(prec.diagonal().max().item())], dtype=torch.float64)
    return LinearGaussian(W, b, math.log(sigma), A, torch.full((k,), 0.1, dtype=torch.float64), log_s)


def test_estimate_approaches_the_closed_form_as_k_grows_and_stays_above_the_elbo():
    model = _approximate_model()
    x = _data(model, 200)
    exact = _exact_log_px(model, x)  # [B]
    elbo = _exact_elbo(model, x)  # [B]
    gap = (exact - elbo).mean().item()
    assert gap > 0.2  # the check below would be empty with a near-perfect q
    errors = {}
    for k in (1, 10, 100, 2000):
        est = log_likelihood(model, x, k=k, seed=1000 + k)  # not the seed that drew the data
        errors[k] = (exact - est).mean().item()  # Jensen: E[estimate] <= log p(x)
        se = (exact - est).std().item() / math.sqrt(len(x))
        # never below the ELBO on average (k=1 *is* an unbiased ELBO estimate)
        assert est.mean().item() >= elbo.mean().item() - 4 * se - 1e-9, k
    assert abs(errors[1] - gap) < 0.15 * gap  # k=1 estimates the ELBO
    assert errors[1] > errors[10] > errors[100] > errors[2000] > -0.01
    assert errors[2000] < 0.05 * gap


def test_uses_exactly_k_samples_in_bounded_chunks():
    model = _orthogonal_model([1.0, 1.0])
    calls = []
    decode = model.decode
    model.decode = lambda z: (calls.append(tuple(z.shape)), decode(z))[1]
    x = _data(model, 5)
    log_likelihood(model, x, k=1003, max_decodes=64)
    assert sum(b * n for b, n, _ in calls) == 5 * 1003
    assert max(b * n for b, n, _ in calls) <= 64
    calls.clear()
    log_likelihood(model, _data(model, 150), k=3, max_decodes=64)  # more images than max_decodes
    assert sum(b * n for b, n, _ in calls) == 150 * 3 and max(b * n for b, n, _ in calls) <= 64


def test_seeded_estimates_repeat_and_do_not_touch_the_global_rng():
    model = _approximate_model()
    x = _data(model, 10)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = log_likelihood(model, x, k=50, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, log_likelihood(model, x, k=50, seed=3))
    assert not torch.equal(a, log_likelihood(model, x, k=50, seed=4))


def test_bernoulli_log_likelihood_matches_numerical_integration():
    # K=1 latent, logits = w z + c: p(x) = int prod_d Bern(x_d; sigmoid(w_d z + c_d)) N(z) dz by quadrature
    torch.manual_seed(0)
    w = torch.randn(D, dtype=torch.float64) * 2
    c = torch.randn(D, dtype=torch.float64)

    class CrudeEncoder(nn.Module):  # a crude q: N(0.3 * sum(x) - 0.9, 0.8^2)
        def forward(self, x):
            flat = x.reshape(x.shape[0], -1)
            return torch.stack([0.3 * flat.sum(1) - 0.9, torch.full_like(flat[:, 0], math.log(0.8))], dim=1)

    class LinearLogits(nn.Module):
        def forward(self, z):  # [M, 1] -> [M, C, H, W]
            return (z[:, :, None] * w + c).reshape(z.shape[0], *D_SHAPE)

    model = VAE(CrudeEncoder(), LinearLogits(), 1, likelihood="bernoulli", image_shape=D_SHAPE).double()
    x = torch.bernoulli(torch.full((8, *D_SHAPE), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64)  # quadrature grid
    log_lik = Bernoulli(logits=z[:, None] * w + c).log_prob(x.reshape(8, 1, D)).sum(-1)  # [8, G]
    log_prior = Normal(0.0, 1.0).log_prob(z)
    exact = torch.logsumexp(log_lik + log_prior, dim=1) + math.log(z[1] - z[0])  # [8]
    est = log_likelihood(model, x, k=20000, seed=0)
    torch.testing.assert_close(est, exact, rtol=0, atol=0.05)  # values are about -4; the IS error ~ 0.01-0.03 here


def test_bad_arguments_are_named():
    model = _orthogonal_model([1.0, 1.0])
    x = _data(model, 3)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        log_likelihood(model, x, k=0)
    with pytest.raises(ValueError, match="max_decodes"):
        log_likelihood(model, x, k=5, max_decodes=0)
    with pytest.raises(ValueError, match=r"x must be .*\[B, C, H, W\], got \[3, 6\]"):
        log_likelihood(model, x.reshape(3, 6), k=5)


# ----------------------------------------------------------------------------- evaluate() on a SimpleVAE


@pytest.fixture(scope="module")
def small_vae_and_images():
    torch.manual_seed(0)
    model = SimpleVAE(K=3, num_filters=4, posterior="diagonal")
    with torch.no_grad():  # spread the posterior means so that some units are active, one not
        last = model.encoder[5]
        last.weight.mul_(torch.tensor([30.0, 0.01, 5.0, 1, 1, 1])[:, None])
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return model, images


def test_evaluate_reports_consistent_numbers(small_vae_and_images):
    model, images = small_vae_and_images
    r = evaluate(model, images, k=20, n_samples=5, batch_size=16, seed=0)
    assert r["n_images"] == 40 and r["dims"] == 784 and r["k"] == 20
    # bits/dim is -log p(x) / (D ln 2), image by image
    assert r["bits_per_dim"] == pytest.approx(-r["log_likelihood"] / (784 * math.log(2)), rel=1e-9)
    # log p(x) estimate >= the ELBO on average
    assert r["log_likelihood"] > r["elbo"] - 3 * r["elbo_se"]
    # latent diagnostics by brute force, one image at a time, with torch.distributions
    mus, kls, sq = [], [], 0.0
    with torch.no_grad():
        for x in images:
            phi = model.encoder(x[None])[0]
            mu, sigma = phi[:3].double(), phi[3:].double().exp()
            mus.append(mu)
            kls.append(kl_divergence(Normal(mu, sigma), Normal(torch.zeros(3, dtype=torch.float64), 1.0)))
            recon = model.decode(phi[None, None, :3])[0, 0]
            sq += ((recon.double() - x.double()) ** 2).mean().item()
    mus = torch.stack(mus)
    var = [statistics.variance(mus[:, j].tolist()) for j in range(3)]
    assert r["posterior_mean_var"] == pytest.approx(var, rel=1e-6)
    assert r["active_units"] == sum(v > 0.01 for v in var)
    assert 0 < r["active_units"] < 3  # the fixture makes the check meaningful
    assert r["active_units_per_layer"] == [sum(v > 0.01 for v in var)]  # one stochastic layer: one count
    assert r["kl_per_dim"] == pytest.approx(torch.stack(kls).mean(0).tolist(), rel=1e-5)
    assert sum(r["kl_per_dim"]) == pytest.approx(r["kl"], rel=1e-5)
    assert r["recon_mse"] == pytest.approx(sq / len(images), rel=1e-5)


def test_latent_stats_returns_the_means(small_vae_and_images):
    model, images = small_vae_and_images
    stats = latent_stats(model, images, batch_size=7)
    with torch.no_grad():
        torch.testing.assert_close(stats["means"], model.encoder(images)[:, :3].float(), rtol=1e-5, atol=1e-6)


def test_the_note_says_what_the_number_means():
    for phrase in ("density", "not of a probability", "bits/dim", "Bernoulli", "k grows"):
        assert phrase in LIKELIHOOD_NOTE


# ----------------------------------------------------------------------------- the batched float32 estimate, dequantization


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


# ----------------------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def trained_small(mnist):
    """A small SimpleVAE (4 filters) trained in fp32 for 200 steps of the quick preset."""
    from vaekit import TrainConfig, fit, set_seed

    set_seed(0)
    model = SimpleVAE(num_filters=4)
    fit(model, mnist.train_images[:8192], TrainConfig(max_steps=200, batch_size=64, device="cpu", precision="fp32"), progress=False)
    return model.eval()


def test_bf16_evaluation_agrees_with_fp32_within_its_standard_error(trained_small, mnist):
    from vaekit.evaluation import evaluate_elbo

    images = mnist.test_images[:500]
    fp32 = evaluate_elbo(trained_small, images, n_samples=2, seed=0)
    bf16 = evaluate_elbo(trained_small, images, n_samples=2, seed=0, autocast_dtype=torch.bfloat16)
    assert fp32["elbo"] > -300  # trained: far above the untrained model's ~ -800
    assert abs(bf16["elbo"] - fp32["elbo"]) < fp32["elbo_se"], (bf16, fp32)
    assert abs(bf16["elbo_se"] - fp32["elbo_se"]) < 0.1 * fp32["elbo_se"]


def test_bf16_log_likelihood_keeps_float64_and_agrees(trained_small, mnist):
    x = mnist.test_images[:20]
    fp32 = log_likelihood(trained_small, x, k=16)
    bf16 = log_likelihood(trained_small, x, k=16, autocast_dtype=torch.bfloat16)
    assert fp32.dtype == bf16.dtype == torch.float64
    se = fp32.std().item() / math.sqrt(len(x))
    assert abs(bf16.mean().item() - fp32.mean().item()) < se
    for p in trained_small.parameters():
        assert p.dtype == torch.float32  # evaluation leaves the weights as they were


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_peak_counts_two_n_cubed_flops_per_product(monkeypatch, dtype):
    """A fake clock that ticks 0.1 s per reading: start 0.0, two products (at 0.1, 0.2 < 0.25), stop
    at 0.3, elapsed read at 0.4 -> 2 products x 2 n^3 FLOPs in 0.4 s."""
    import vaekit.evaluation as ev

    ticks = iter(i / 10 for i in range(100))
    monkeypatch.setattr(ev.time, "perf_counter", lambda: next(ticks))
    n = 32
    assert ev.matmul_peak_gflops(seconds=0.25, n=n, dtype=dtype) == pytest.approx(2 * 2 * n**3 / 0.4 / 1e9)


def test_default_pass_size_is_the_devices(mnist):
    """None decodes MAX_DECODES_CPU images per pass on the CPU: the same draws, so the same numbers, as naming it;
    a GPU's (MAX_DECODES) splits the samples differently, so it draws other noise."""
    from vaekit.evaluation import MAX_DECODES, MAX_DECODES_CPU, default_max_decodes

    assert default_max_decodes(torch.device("cpu")) == MAX_DECODES_CPU < MAX_DECODES == default_max_decodes(torch.device("cuda"))
    torch.manual_seed(0)
    model = SimpleVAE(K=2, num_filters=4)
    x = mnist.test_images[:100]  # 100 images: MAX_DECODES_CPU // 100 samples per pass
    default = log_likelihood(model, x, k=60, seed=3)
    assert torch.equal(default, log_likelihood(model, x, k=60, seed=3, max_decodes=MAX_DECODES_CPU))
    assert not torch.equal(default, log_likelihood(model, x, k=60, seed=3, max_decodes=MAX_DECODES))
