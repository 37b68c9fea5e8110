"""The extensions beyond the assignment: diagonal posterior, Bernoulli likelihood, binarization,
latent-space tools and their plots.

Every number is checked against an independent reference: torch.distributions, a closed
form, numpy, or the standard library.
"""

import itertools
import math
import statistics

import matplotlib.image
import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import vaekit.plots as plots
from vaekit import SimpleVAE, TrainConfig, binarize, fit, generate_images
from vaekit.data import BINARIZE_SEED
from vaekit.distributions import kl_diag_std_normal, log_bernoulli, log_prob_diag, rsample, rsample_diag
from vaekit.latents import interpolate, latent_grid, pca, posterior_means, reconstruct
from vaekit.objectives import elbo as elbo_objective

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZE = 12  # image_size of the tiny models: 12 -> 8 -> 4 after the two 5x5 convolutions


def tiny(**kw):
    kw.setdefault("K", 2)
    kw.setdefault("num_filters", 4)
    kw.setdefault("image_size", SIZE)
    torch.manual_seed(kw.pop("seed", 0))
    return SimpleVAE(**kw)


def rand(*shape, seed=0, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def grey_images(n, seed=0, size=SIZE):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=gen)


# ============================================================================ distributions


@pytest.mark.parametrize(
    "x_shape,mu_shape,ls_shape",
    [((4, 3), (4, 3), (4, 3)), ((2, 5, 3), (2, 5, 3), (2, 5, 1)), ((2, 5, 3), (2, 1, 3), (1, 1, 3)), ((6, 1), (1,), (1,))],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_diag_matches_reference(x_shape, mu_shape, ls_shape, dtype):
    x = rand(*x_shape, seed=1, dtype=dtype, scale=2)
    mu = rand(*mu_shape, seed=2, dtype=dtype)
    log_sigma = rand(*ls_shape, seed=3, dtype=dtype, scale=0.5)
    got = log_prob_diag(x, mu, log_sigma)
    ref = Independent(Normal(mu.expand(x_shape), log_sigma.exp().expand(x_shape)), 1).log_prob(x)
    assert got.shape == x_shape[:-1] and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])


@pytest.mark.parametrize("b,k,dtype,per_dim_sigma", list(itertools.product([1, 5], [1, 3], DTYPES, [True, False])))
def test_kl_diag_std_normal_matches_reference(b, k, dtype, per_dim_sigma):
    mu = rand(b, k, seed=4, dtype=dtype, scale=1.5)
    log_sigma = rand(b, k if per_dim_sigma else 1, seed=5, dtype=dtype, scale=0.7)
    got = kl_diag_std_normal(mu, log_sigma)
    ref = kl_divergence(Normal(mu, log_sigma.exp().expand(b, k)), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    assert got.shape == (b, k) and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])
    assert (got >= 0).all()


def test_kl_diag_is_zero_at_the_prior():
    got = kl_diag_std_normal(torch.zeros(3, 4), torch.zeros(3, 4))
    assert torch.equal(got, torch.zeros(3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rsample_diag_matches_normal_rsample_and_passes_gradients(dtype):
    b, n, k = 3, 4, 5
    mu = rand(b, k, seed=6, dtype=dtype).requires_grad_()
    log_sigma = rand(b, k, seed=7, dtype=dtype, scale=0.5).requires_grad_()
    torch.manual_seed(11)
    z = rsample_diag(mu, log_sigma, n)
    mu_r = mu.detach().clone().requires_grad_()
    ls_r = log_sigma.detach().clone().requires_grad_()
    torch.manual_seed(11)
    z_ref = Normal(mu_r, ls_r.exp()).rsample([n]).permute(1, 0, 2)  # [B, N, K]
    assert z.shape == (b, n, k) and z.dtype == dtype
    torch.testing.assert_close(z, z_ref, **TOL[dtype])
    weights = rand(b, n, k, seed=8, dtype=dtype)
    (z * weights).sum().backward()
    (z_ref * weights).sum().backward()
    assert mu.grad is not None and log_sigma.grad is not None
    assert log_sigma.grad.abs().sum() > 0
    torch.testing.assert_close(mu.grad, mu_r.grad, **TOL[dtype])
    torch.testing.assert_close(log_sigma.grad, ls_r.grad, **TOL[dtype])


def test_rsample_diag_equals_rsample_for_an_isotropic_posterior():
    params = rand(4, 3, seed=9, scale=0.8)  # [B, K+1], K = 2
    torch.manual_seed(5)
    a = rsample(params, 6)
    torch.manual_seed(5)
    b = rsample_diag(params[:, :-1], params[:, -1:], 6)
    assert torch.equal(a, b)


def test_rsample_diag_moments():
    mu = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    log_sigma = torch.tensor([[0.0, math.log(0.3), math.log(2.0)]], dtype=torch.float64)
    torch.manual_seed(0)
    z = rsample_diag(mu, log_sigma, 20_000)[0]  # [N, K]
    sigma = log_sigma.exp()[0]
    # the sample mean is within 5 standard errors, the sample std within 5% (20k draws)
    assert ((z.mean(0) - mu[0]).abs() < 5 * sigma / math.sqrt(len(z))).all()
    torch.testing.assert_close(z.std(0), sigma, rtol=0.05, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_bernoulli_matches_reference(dtype):
    x = torch.bernoulli(torch.full((3, 4, 10), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    logits = rand(3, 4, 10, seed=10, scale=3)
    got = log_bernoulli(x.to(dtype), logits.to(dtype))
    ref = Independent(Bernoulli(logits=logits), 1).log_prob(x)
    assert got.shape == (3, 4) and got.dtype == dtype
    torch.testing.assert_close(got, ref.to(dtype), **TOL[dtype])


def test_log_bernoulli_broadcasts_logits():
    x = torch.bernoulli(torch.full((5, 7), 0.5), generator=torch.Generator().manual_seed(1))
    logits = rand(7, seed=11).float()
    ref = Bernoulli(logits=logits.expand(5, 7)).log_prob(x).sum(-1)
    torch.testing.assert_close(log_bernoulli(x, logits), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_bernoulli_is_stable_at_extreme_logits(dtype):
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 30.0, -30.0, 0.0, 15.0], dtype=torch.float64)
    x = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    # per element: x*l - log(1 + e^l), written stably in float64 as x*l - max(l, 0) - log1p(e^-|l|)
    ref = np.array([xv * lv - max(lv, 0.0) - math.log1p(math.exp(-abs(lv))) for xv, lv in zip(x.tolist(), logits.tolist())])
    got = torch.stack([log_bernoulli(x[i : i + 1].to(dtype), logits[i : i + 1].to(dtype)) for i in range(len(x))])
    assert got.dtype == dtype and torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-6, atol=1e-6)
    # a confident wrong prediction costs ~|logit| nats; a confident right one ~0
    assert got[2].item() == pytest.approx(-100.0) and got[3].item() == pytest.approx(-100.0)
    total = log_bernoulli(x.to(dtype), logits.to(dtype))
    assert torch.isfinite(total) and total.item() == pytest.approx(ref.sum(), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_bernoulli_is_accurate_for_confident_correct_predictions(dtype):
    logits = [5.0, 10.0, 15.0, 21.0, 30.0, -30.0, -21.0, -10.0]
    x = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # log p = -log(1 + e^-|l|) when the prediction is right, tiny but representable in either dtype
    ref = np.array([-math.log1p(math.exp(-abs(lv))) for lv in logits])
    got = log_bernoulli(torch.tensor(x, dtype=dtype)[:, None], torch.tensor(logits, dtype=dtype)[:, None])
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


def test_log_bernoulli_gradient_is_finite_at_extreme_logits():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    x = torch.tensor([1.0, 0.0, 0.0, 1.0])
    log_bernoulli(x, logits).backward()
    # d/dl [x l - softplus(l)] = x - sigmoid(l)
    torch.testing.assert_close(logits.grad, torch.tensor([0.0, 0.0, -1.0, 1.0]))


@pytest.mark.parametrize(
    "call,exc,name",
    [
        (lambda: log_prob_diag([1.0], torch.zeros(1), torch.zeros(1)), TypeError, "x"),
        (lambda: log_prob_diag(torch.zeros(3), torch.zeros(3, dtype=torch.int64), torch.zeros(3)), ValueError, "mu"),
        (lambda: log_prob_diag(torch.zeros(2, 3), torch.zeros(4), torch.zeros(3)), ValueError, "mu"),
        (lambda: log_prob_diag(torch.zeros(2, 3), torch.zeros(3), torch.zeros(5, 2, 3)), ValueError, "log_sigma"),
        (lambda: log_prob_diag(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.float64)), ValueError, "log_sigma"),
        (lambda: kl_diag_std_normal(torch.zeros(2, 3, 1), torch.zeros(2, 3)), ValueError, "mu"),
        (lambda: kl_diag_std_normal(torch.zeros(2, 3), torch.zeros(2, 2)), ValueError, "log_sigma"),
        (lambda: kl_diag_std_normal(torch.zeros(2, 3), "0"), TypeError, "log_sigma"),
        (lambda: rsample_diag(torch.zeros(2, 3), torch.zeros(3, 3), 1), ValueError, "log_sigma"),
        (lambda: rsample_diag(torch.zeros(2, 3), torch.zeros(2, 1), 0), ValueError, "num_samples"),
        (lambda: rsample_diag(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, 1), 1), ValueError, "mu"),
        (lambda: log_bernoulli(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "logits"),
        (lambda: log_bernoulli(torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(2, 3)), ValueError, "x"),
        (lambda: log_bernoulli(torch.zeros(2, 3), None), TypeError, "logits"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()


# ============================================================================ model


def ref_terms(model, x, n, seed, calibrated=False):
    """ELBO terms of ``model`` at ``x``, written out with torch.distributions.

    Re-seeds the global RNG so that the reparameterization noise is the one the ELBO objective draws
    (the noise is [N, B, K], as ``Normal(...).rsample([N])`` draws it).
    """
    k = model.K
    with torch.no_grad():
        phi = model.encoder(x)
    mu = phi[:, :k]
    sigma = phi[:, k:].exp().expand_as(mu)  # one std (isotropic) or K stds (diagonal)
    torch.manual_seed(seed)
    with torch.no_grad():
        z = Normal(mu, sigma).rsample([n]).permute(1, 0, 2)  # [B, N, K]
        out = model.decode(z).reshape(x.shape[0], n, -1)  # [B, N, D]
    xf = x.reshape(x.shape[0], 1, -1).expand_as(out)
    if model.likelihood.name == "bernoulli":
        rec = Independent(Bernoulli(logits=out), 1).log_prob(xf).mean(1)
        sig_x = None
    else:
        if calibrated:
            sig_x = torch.tensor(float(np.sqrt(np.mean((xf - out).double().numpy() ** 2))), dtype=x.dtype)
        else:
            sig_x = model.log_sig_x.detach().exp()
        rec = Independent(Normal(out, sig_x.expand_as(out)), 1).log_prob(xf).mean(1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    kl = kl_divergence(Independent(Normal(mu, sigma), 1), prior)
    return rec, kl, sig_x


def model_terms(model, x, n, seed, calibrated=False):
    torch.manual_seed(seed)
    with torch.no_grad():
        return elbo_objective(model, x, samples=n, calibrated=calibrated)


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


def test_diagonal_posterior_layout():
    model = tiny(K=3, posterior="diagonal")
    assert model.encoder[-1].out_features == 6
    x = grey_images(2)
    phi = model.encode(x)
    mu, log_sig = model.posterior.split(phi)
    assert torch.equal(mu, phi[:, :3]) and torch.equal(log_sig, phi[:, 3:])
    assert tiny(K=3).encoder[-1].out_features == 4


@pytest.mark.parametrize("calibrated", [False, True])
def test_default_model_is_isotropic_gaussian_and_unchanged(calibrated):
    model = tiny(K=2)
    assert model.likelihood.name == "gaussian" and model.posterior.name == "isotropic"
    assert model.encoder[-1].out_features == 3 and model.log_sig_x.requires_grad
    with torch.no_grad():
        model.log_sig_x.fill_(-1.2)
    x = grey_images(5, seed=3)
    terms = model_terms(model, x, 4, seed=31, calibrated=calibrated)
    rec, kl, sig_x = ref_terms(model, x, 4, seed=31, calibrated=calibrated)
    torch.testing.assert_close(terms.rec, rec, **TOL[torch.float32])
    torch.testing.assert_close(terms.kl, kl, **TOL[torch.float32])
    torch.testing.assert_close(terms.log_sig_x, sig_x.log(), **TOL[torch.float32])


def test_bernoulli_model_freezes_log_sig_x_and_ignores_calibrated():
    model = tiny(likelihood="bernoulli")
    assert not model.log_sig_x.requires_grad
    x = torch.bernoulli(grey_images(3, seed=4), generator=torch.Generator().manual_seed(0))
    a = model_terms(model, x, 2, seed=41, calibrated=False)
    b = model_terms(model, x, 2, seed=41, calibrated=True)
    torch.testing.assert_close(a.rec, b.rec, rtol=0, atol=0)
    assert a.log_sig_x.item() == b.log_sig_x.item() == 0.0


@pytest.mark.parametrize("arg,value", [("likelihood", "poisson"), ("posterior", "full"), ("likelihood", "Gaussian")])
def test_invalid_likelihood_or_posterior_raises(arg, value):
    with pytest.raises(ValueError, match=rf"{arg}.*{value}"):
        SimpleVAE(K=2, num_filters=4, image_size=SIZE, **{arg: value})


def test_mean_image_of_bernoulli_is_the_sigmoid_of_the_logits():
    model = tiny(likelihood="bernoulli")
    z = rand(3, 2, 2, seed=12).float()
    with torch.no_grad():
        logits = model.decode(z)
        got = model.mean_image(z)
    ref = 1.0 / (1.0 + np.exp(-logits.double().numpy()))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    gauss = tiny()
    with torch.no_grad():
        assert torch.equal(gauss.mean_image(z), gauss.decode(z))


def test_generated_images_of_a_bernoulli_model_are_probabilities():
    model = tiny(likelihood="bernoulli")
    with torch.no_grad():  # wider logits, so that an unsquashed decoder output would leave (0, 1)
        model.decoder[-1].weight.mul_(8.0)
        model.decoder[-1].bias.fill_(0.0)
    torch.manual_seed(0)
    images = generate_images(model, n_images=6)
    assert images.shape == (6, 1, SIZE, SIZE)
    assert ((images > 0) & (images < 1)).all()
    torch.manual_seed(0)  # the same z ~ N(0, I), drawn as [X, 1, K]
    with torch.no_grad():
        logits = model.decode(torch.randn(6, 1, 2))[:, 0].double().numpy()
    assert logits.min() < 0 and logits.max() > 1
    np.testing.assert_allclose(images.numpy(), 1.0 / (1.0 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


def test_bernoulli_model_trains_with_fit(mnist):
    images = mnist.train_images[:32]
    x = binarize(images)  # what static binarization trains on
    model = SimpleVAE(K=2, num_filters=4, likelihood="bernoulli")
    before = model_terms(model, x, 4, seed=99).loss.mean().item()
    # a fresh model is near 784 log 2 nats per image (logits near 0)
    assert abs(before - 784 * math.log(2)) < 200
    cfg = TrainConfig(epochs=2, batch_size=16, samples=1, lr=1e-2, device="cpu", binarize="static", seed=0)
    result = fit(model, images, cfg, progress=False)
    assert result.steps == 4 and np.isfinite(result.batch_elbos).all()
    after = model_terms(model, x, 4, seed=99).loss.mean().item()
    assert math.isfinite(after) and after < before - 10
    assert model.log_sig_x.item() == 0.0 and not model.log_sig_x.requires_grad


# ============================================================================ binarize


@pytest.mark.parametrize("dtype", DTYPES)
def test_binarize_is_binary_and_keeps_shape_and_dtype(dtype):
    x = grey_images(3, seed=5).to(dtype)
    y = binarize(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert ((y == 0) | (y == 1)).all()
    assert ((y == 0) & (x == 0)).sum() == (x == 0).sum()  # never lights up a black pixel


def test_binarize_with_a_seed_ignores_and_keeps_the_global_rng():
    x = grey_images(4, seed=6)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = binarize(x, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator
    torch.manual_seed(123)
    torch.rand(1000)
    b = binarize(x, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(binarize(x), binarize(x, seed=BINARIZE_SEED))
    assert not torch.equal(a, binarize(x, seed=8))


def test_binarize_without_a_seed_uses_the_global_rng():
    x = grey_images(4, seed=6)
    torch.manual_seed(3)
    a = binarize(x, seed=None)
    torch.manual_seed(3)
    b = binarize(x, seed=None)
    c = binarize(x, seed=None)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_binarize_frequency_of_ones_is_the_grey_level():
    levels = [0.0, 0.02, 0.25, 0.5, 0.8, 1.0]
    n = 40_000
    x = torch.tensor(levels).repeat_interleave(n).reshape(len(levels), 1, 200, 200)
    y = binarize(x, seed=9)
    for i, p in enumerate(levels):
        ones = y[i].sum().item()
        sd = math.sqrt(n * p * (1 - p))  # binomial standard deviation of the count
        assert abs(ones - n * p) <= 5 * sd, (p, ones)


def test_binarize_rejects_integer_images():
    with pytest.raises(ValueError, match="images"):
        binarize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


# ============================================================================ fit's binarize modes


def recorded_batches(model, images, binarize_mode, monkeypatch, seed=0):
    """Train 2 epochs of one batch each; return the x that the model encoded in each step."""
    seen = []
    original = model.encode

    def spy(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(x, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    cfg = TrainConfig(epochs=2, batch_size=len(images), samples=1, device="cpu", binarize=binarize_mode, seed=0)
    torch.manual_seed(seed)
    fit(model, images, cfg, progress=False)
    assert len(seen) == 2
    return seen


def rows(x):
    """The images of a batch as a sorted list of tuples: the batch as a multiset."""
    return sorted(tuple(r) for r in x.reshape(x.shape[0], -1).tolist())


def test_fit_dynamic_binarization_draws_fresh_samples(monkeypatch):
    images = torch.full((8, 1, SIZE, SIZE), 0.5)  # every image the same: the data order does not matter
    seen = recorded_batches(tiny(), images, "dynamic", monkeypatch)
    for x in seen:
        assert x.shape == images.shape
        assert ((x == 0) | (x == 1)).all()
        ones = x.sum().item()
        assert abs(ones - x.numel() / 2) <= 5 * math.sqrt(x.numel() / 4)
    assert not torch.equal(seen[0], seen[1])
    assert rows(seen[0]) != rows(seen[1])
    # the draws come from the global RNG: the same seed gives the same draws, another seed others
    again = recorded_batches(tiny(), images, "dynamic", monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(seen, again))
    other = recorded_batches(tiny(), images, "dynamic", monkeypatch, seed=1)
    assert not torch.equal(seen[0], other[0])


def test_fit_static_binarization_draws_once(monkeypatch):
    images = grey_images(8, seed=13)
    seen = recorded_batches(tiny(), images, "static", monkeypatch)
    for x in seen:
        assert ((x == 0) | (x == 1)).all()
    assert rows(seen[0]) == rows(seen[1])
    assert rows(seen[0]) == rows(binarize(images))
    assert len(set(rows(seen[0]))) == 8  # distinct images, so the multiset comparison means something


def test_fit_without_binarization_sees_the_images(monkeypatch):
    images = grey_images(8, seed=14)
    seen = recorded_batches(tiny(), images, "none", monkeypatch)
    for x in seen:
        assert rows(x) == rows(images)
        assert ((x > 0) & (x < 1)).any()


# ============================================================================ latents


def numpy_pca(points):
    """Centered SVD: directions (rows, largest |component| positive), std along each."""
    x = points.double().numpy()
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    for i in range(len(vt)):
        if vt[i, np.argmax(np.abs(vt[i]))] < 0:
            vt[i] = -vt[i]
    return x.mean(0), vt, s / math.sqrt(len(x) - 1)


def test_pca_matches_numpy_svd():
    gen = torch.Generator().manual_seed(15)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    points = (torch.randn(300, 4, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.5, 0.6, 0.2])) @ q.T
    points = (points + torch.tensor([1.0, -2.0, 0.5, 4.0])).float()
    center, dirs, std = pca(points, 3)
    assert center.shape == (4,) and dirs.shape == (3, 4) and std.shape == (3,)
    c_ref, d_ref, s_ref = numpy_pca(points)
    np.testing.assert_allclose(center.numpy(), c_ref, rtol=1e-5, atol=1e-5)
    # equal up to sign, and the sign is the one that makes the largest |component| positive
    np.testing.assert_allclose(np.abs(np.sum(dirs.numpy() * d_ref[:3], axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(dirs.numpy(), d_ref[:3], atol=1e-5)
    d = dirs.double().numpy()
    assert (d[np.arange(3), np.abs(d).argmax(1)] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), s_ref[:3], rtol=1e-5)
    # the std is the sample std of the projections
    proj = (points.double().numpy() - c_ref) @ d.T
    np.testing.assert_allclose(std.numpy(), proj.std(axis=0, ddof=1), rtol=1e-5)
    assert (np.diff(std.numpy()) < 0).all()


def test_pca_pads_missing_directions_with_zeros():
    points = rand(50, 2, seed=16).float()
    center, dirs, std = pca(points, 3)
    assert dirs.shape == (3, 2) and std.shape == (3,)
    assert torch.equal(dirs[2], torch.zeros(2)) and std[2].item() == 0.0
    _, d_ref, s_ref = numpy_pca(points)
    np.testing.assert_allclose(dirs[:2].numpy(), d_ref, atol=1e-5)
    np.testing.assert_allclose(std[:2].numpy(), s_ref, rtol=1e-5)


def decode_points(model, z):
    """mean images [P, C, H, W] of latents [P, K], in eval mode."""
    with torch.no_grad():
        return model.eval().mean_image(torch.as_tensor(np.asarray(z), dtype=torch.float32)[:, None, :])[:, 0]


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_latent_grid_k2_decodes_the_prior_quantiles(likelihood):
    model = tiny(likelihood=likelihood)
    n = 5
    images, what = latent_grid(model, n)
    assert images.shape == (n * n, 1, SIZE, SIZE) and isinstance(what, str) and what
    q = [statistics.NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]  # increasing
    # cell (row r, col c): z_0 = q[c] (left = smallest), z_1 = q[n-1-r] (top = largest)
    cells = {(0, 0): (q[0], q[-1]), (n - 1, n - 1): (q[-1], q[0]), (1, 3): (q[3], q[n - 2]), (2, 2): (q[2], q[2])}
    ref = decode_points(model, [z for z in cells.values()])
    for j, (r, c) in enumerate(cells):
        torch.testing.assert_close(images[r * n + c], ref[j], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(images[0], images[-1])
    if likelihood == "bernoulli":
        assert ((images > 0) & (images < 1)).all()


def test_latent_grid_k3_is_centered_on_the_mean_of_means():
    model = tiny(K=3)
    gen = torch.Generator().manual_seed(17)
    means = torch.randn(40, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.3]) + torch.tensor([0.5, -1.0, 2.0])
    n, span = 5, 2.0
    images, _ = latent_grid(model, n, means=means, span=span)
    assert images.shape == (n * n, 1, SIZE, SIZE)
    c_ref, d_ref, s_ref = numpy_pca(means)
    torch.testing.assert_close(images[n * n // 2], decode_points(model, [c_ref])[0], rtol=1e-5, atol=1e-5)
    # top-left: +span std along the 2nd direction (rows go down it), -span std along the 1st (columns)
    top_left = c_ref + span * s_ref[1] * d_ref[1] - span * s_ref[0] * d_ref[0]
    torch.testing.assert_close(images[0], decode_points(model, [top_left])[0], rtol=1e-4, atol=1e-4)


def test_latent_grid_k3_needs_means():
    with pytest.raises(ValueError, match="means"):
        latent_grid(tiny(K=3), 3)


@pytest.mark.parametrize("posterior", ["isotropic", "diagonal"])
def test_posterior_means_and_reconstruct(posterior):
    model = tiny(K=3, posterior=posterior, likelihood="bernoulli")
    model.train()
    x = grey_images(7, seed=18)
    got = posterior_means(model, x, batch_size=3)  # chunks of 3, 3 and 1
    with torch.no_grad():
        ref = model.encoder(x)[:, :3]
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, ref)
    recon = reconstruct(model, x)
    with torch.no_grad():
        logits = model.decoder(ref)  # [M, 1, H, W]
    torch.testing.assert_close(recon, torch.sigmoid(logits), rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored


def test_interpolate_endpoints_and_midpoint():
    model = tiny(K=2)
    a, b = grey_images(3, seed=19), grey_images(3, seed=20)
    strips = interpolate(model, a, b, steps=5)
    assert strips.shape == (3, 5, 1, SIZE, SIZE)
    with torch.no_grad():
        za, zb = model.encoder(a)[:, :2], model.encoder(b)[:, :2]
    torch.testing.assert_close(strips[:, 0], decode_points(model, za), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, -1], decode_points(model, zb), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, 2], decode_points(model, (za + zb) / 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, 0], model.mean_image(posterior_means(model, a)[:, None])[:, 0].detach())


@pytest.mark.parametrize(
    "a_shape,b_shape,steps", [((2, 1, SIZE, SIZE), (3, 1, SIZE, SIZE), 4), ((2, 1, SIZE, SIZE), (2, 1, SIZE, SIZE), 1)]
)
def test_interpolate_rejects_bad_shapes_and_steps(a_shape, b_shape, steps):
    with pytest.raises(ValueError, match="steps" if steps < 2 else "same shape"):
        interpolate(tiny(), torch.rand(a_shape), torch.rand(b_shape), steps=steps)


# ============================================================================ plots


def check_png(path, min_side=60, max_side=3000):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert min_side <= h <= max_side and min_side <= w <= max_side, img.shape
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return h, w


def test_plot_reconstructions_writes_a_png(tmp_path):
    images = grey_images(5, seed=21)
    path = tmp_path / "recon.png"
    plots.plot_reconstructions(images, 1 - images, path, cols=4)
    check_png(path)
    with pytest.raises(ValueError, match="recon"):
        plots.plot_reconstructions(images, images[:4], tmp_path / "bad.png")


def test_plot_latent_map_writes_a_png(tmp_path):
    images, what = latent_grid(tiny(), 4)
    path = tmp_path / "map.png"
    plots.plot_latent_map(images, path, what)
    h, w = check_png(path)
    assert 0.7 < h / w < 1.5  # a square grid


@pytest.mark.parametrize("with_labels", [True, False])
def test_plot_latent_scatter_writes_a_png_with_a_legend_of_labels(tmp_path, monkeypatch, with_labels):
    figures = []
    original = plots.save_figure

    def spy(fig, path, *args, **kwargs):
        figures.append(fig)
        original(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure", spy)
    points = rand(60, 2, seed=22).float()
    labels = torch.tensor([7, 2, 5] * 20) if with_labels else None
    path = tmp_path / "scatter.png"
    plots.plot_latent_scatter(points, labels, path, title="t")
    check_png(path)
    legend = figures[0].axes[0].get_legend()
    if with_labels:
        assert [t.get_text() for t in legend.get_texts()] == ["2", "5", "7"]
    else:
        assert legend is None


def test_plot_interpolations_writes_a_png(tmp_path):
    model = tiny()
    strips = interpolate(model, grey_images(2, seed=23), grey_images(2, seed=24), steps=6)
    path = tmp_path / "interp.png"
    plots.plot_interpolations(strips, path)
    h, w = check_png(path)
    assert w > h  # 2 rows of 6 images
