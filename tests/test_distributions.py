"""The math against torch.distributions, the independent reference (or a closed form, numpy, the standard library):
the isotropic Gaussian (log_prob, both KLs, rsample, the ELBO), the diagonal Gaussian and the Bernoulli, then
property-based tests on random shapes and extreme but valid values."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vaekit import elbo, kl_q_p_exact, kl_q_p_mc, log_prob, rsample
from vaekit.distributions import kl_diag_std_normal, log_bernoulli, log_prob_diag, rsample_diag

from helpers import DTYPES, TOL, rand

SHAPES = [(1, 1, 1), (1, 3, 2), (4, 1, 2), (2, 5, 1), (8, 10, 2), (3, 7, 16)]  # (B, N, K)


def ref_dist(params):
    """torch.distributions view of packed [B, K+1] params, as [B, K] independent Normals."""
    return Normal(params[:, :-1], params[:, -1:].exp())


def rand_params(b, k, dtype, gen, scale=1.0):
    return (torch.randn(b, k + 1, generator=gen, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("shape,dtype,seed", list(itertools.product(SHAPES, DTYPES, range(3))))
def test_log_prob_matches_reference(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    b, n, k = shape
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) * 3
    mu = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    log_sigma = torch.randn(b, n, generator=gen, dtype=torch.float64).to(dtype)
    got = log_prob(x, mu, log_sigma)
    ref = Normal(mu, log_sigma.exp()[..., None]).log_prob(x).sum(-1)
    assert got.shape == (b, n) and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])


@pytest.mark.parametrize("b,k,dtype,seed", list(itertools.product([1, 3, 16], [1, 2, 10], DTYPES, range(3))))
def test_kl_exact_matches_reference(b, k, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    pq, pp = rand_params(b, k, dtype, gen), rand_params(b, k, dtype, gen)
    got = kl_q_p_exact(pq, pp)
    ref = kl_divergence(ref_dist(pq), ref_dist(pp)).sum(-1)
    assert got.shape == (b,) and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])


def test_kl_exact_is_zero_for_equal_and_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    p = rand_params(50, 3, torch.float64, gen)
    torch.testing.assert_close(kl_q_p_exact(p, p), torch.zeros(50, dtype=torch.float64))
    q = rand_params(50, 3, torch.float64, gen)
    assert (kl_q_p_exact(q, p) > 0).all()


@pytest.mark.parametrize("shape,dtype,seed", list(itertools.product(SHAPES, DTYPES, range(3))))
def test_kl_mc_matches_reference_on_same_samples(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    b, n, k = shape
    pq, pp = rand_params(b, k, dtype, gen), rand_params(b, k, dtype, gen)
    samples = torch.randn(n, b, k, generator=gen, dtype=torch.float64).to(dtype)  # any points will do
    samples = samples.permute(1, 0, 2)  # [B, N, K]
    got = kl_q_p_mc(samples, pq, pp)
    s = samples.permute(1, 0, 2)  # [N, B, K] broadcasts against [B, K]
    ref = (ref_dist(pq).log_prob(s).sum(-1) - ref_dist(pp).log_prob(s).sum(-1)).mean(0)
    assert got.shape == (b,) and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])


def test_kl_mc_converges_to_exact():
    gen = torch.Generator().manual_seed(3)
    pq, pp = rand_params(6, 2, torch.float64, gen, 0.5), rand_params(6, 2, torch.float64, gen, 0.5)
    torch.manual_seed(0)
    n = 200_000
    z = ref_dist(pq).sample([n]).permute(1, 0, 2)  # reference samples, [B, N, K]
    est = kl_q_p_mc(z, pq, pp)
    exact = kl_divergence(ref_dist(pq), ref_dist(pp)).sum(-1)
    # standard error of the MC mean, from the per-sample log ratios
    s = z.permute(1, 0, 2)
    ratios = ref_dist(pq).log_prob(s).sum(-1) - ref_dist(pp).log_prob(s).sum(-1)  # [N, B]
    se = ratios.std(0) / math.sqrt(n)
    assert ((est - exact).abs() < 5 * se + 1e-12).all()


@pytest.mark.parametrize("b,n,k,dtype", list(itertools.product([1, 4], [1, 3, 50], [1, 2, 5], DTYPES)))
def test_rsample_draws_the_reference_stream(b, n, k, dtype):
    gen = torch.Generator().manual_seed(b * 100 + n * 10 + k)
    pq = rand_params(b, k, dtype, gen)
    torch.manual_seed(1234)
    got = rsample(pq, n)
    torch.manual_seed(1234)
    ref = Normal(pq[:, :-1], pq[:, -1:].exp()).rsample([n]).permute(1, 0, 2)
    assert got.shape == (b, n, k) and got.dtype == dtype
    assert torch.equal(got, ref)


def test_rsample_gradients_match_reference():
    gen = torch.Generator().manual_seed(0)
    pq = rand_params(3, 2, torch.float64, gen).requires_grad_()
    w = torch.randn(3, 20, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(7)
    (rsample(pq, 20) * w).sum().backward()
    got = pq.grad.clone()
    pq.grad = None
    torch.manual_seed(7)
    (Normal(pq[:, :-1], pq[:, -1:].exp()).rsample([20]).permute(1, 0, 2) * w).sum().backward()
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, pq.grad)


def test_rsample_moments():
    params = torch.tensor([[1.0, -2.0, math.log(0.5)]], dtype=torch.float64)
    torch.manual_seed(0)
    z = rsample(params, 100_000)[0]  # [N, K]
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.01, rtol=0)


@pytest.mark.parametrize("dtype,seed,n", list(itertools.product(DTYPES, range(3), [1, 4])))
def test_elbo_matches_reference(dtype, seed, n):
    gen = torch.Generator().manual_seed(seed)
    b, k, d = 5, 2, 12
    x = torch.rand(b, d, generator=gen, dtype=torch.float64).to(dtype)
    pq = rand_params(b, k, dtype, gen)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64).to(dtype)
    decoder = lambda z: torch.tanh(z @ w)  # [B, N, K] -> [B, N, D]
    log_sig_x = torch.tensor(-0.7, dtype=dtype)

    torch.manual_seed(seed)
    got = elbo(x, pq, n, decoder, log_sig_x)

    torch.manual_seed(seed)
    q = ref_dist(pq)
    z = q.rsample([n]).permute(1, 0, 2)  # [B, N, K]
    rec = Normal(decoder(z), log_sig_x.exp()).log_prob(x[:, None, :]).sum(-1).mean(1)  # [B]
    prior = Normal(torch.zeros_like(pq[:, :-1]), torch.ones_like(pq[:, :-1]))
    ref = -rec + kl_divergence(q, prior).sum(-1)
    assert got.shape == (b,) and got.dtype == dtype
    torch.testing.assert_close(got, ref, **TOL[dtype])


def test_elbo_gradients_reach_encoder_params_and_sigma():
    pq = torch.randn(4, 3, requires_grad=True)
    log_sig_x = torch.tensor(0.3, requires_grad=True)
    loss = elbo(torch.rand(4, 6), pq, 2, lambda z: z.sum(-1, keepdim=True).expand(-1, -1, 6), log_sig_x)
    loss.sum().backward()
    assert pq.grad is not None and pq.grad.abs().sum() > 0
    assert log_sig_x.grad is not None and log_sig_x.grad != 0


@pytest.mark.parametrize(
    "call,argname",
    [
        (lambda: log_prob(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2)), "x"),
        (lambda: log_prob(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.zeros(2, 3)), "mu"),
        (lambda: log_prob(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4)), "log_sigma"),
        (lambda: kl_q_p_exact(torch.zeros(2, 3), torch.zeros(3, 3)), "params_p"),
        (lambda: kl_q_p_exact(torch.zeros(2, 1), torch.zeros(2, 1)), "params_q"),
        (lambda: kl_q_p_mc(torch.zeros(2, 5, 3), torch.zeros(2, 3), torch.zeros(2, 3)), "params_q"),
        (lambda: kl_q_p_mc(torch.zeros(2, 5, 2), torch.zeros(2, 3), torch.zeros(1, 3)), "params_p"),
        (lambda: rsample(torch.zeros(2, 3, 1), 4), "params_q"),
        (lambda: rsample(torch.zeros(2, 3), 0), "num_samples"),
        (lambda: elbo(torch.zeros(2, 6), torch.zeros(3, 3), 1, lambda z: z, 0.0), "params_q"),
        (lambda: elbo(torch.zeros(2, 6), torch.zeros(2, 3), 1, lambda z: z, 0.0), "func_decoder"),
        (lambda: elbo(torch.zeros(2, 6), torch.zeros(2, 3), 1, lambda z: z.sum(-1, keepdim=True).expand(-1, -1, 6), torch.zeros(2)), "log_sig_x"),
    ],
)
def test_shape_errors_name_the_argument(call, argname):
    with pytest.raises(ValueError, match=argname):
        call()


def test_shape_error_shows_shapes():
    with pytest.raises(ValueError, match=r"\[2, 3, 5\]"):
        log_prob(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.zeros(2, 3))


def test_mixed_dtypes_are_rejected():
    with pytest.raises(ValueError, match="dtype"):
        kl_q_p_exact(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))


def test_mixed_devices_are_rejected():
    with pytest.raises(ValueError, match="device"):
        kl_q_p_exact(torch.zeros(2, 3), torch.zeros(2, 3, device="meta"))
    with pytest.raises(ValueError, match="device"):
        log_prob(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, device="meta"), torch.zeros(2, 3))


# ============================================================================ the diagonal Gaussian and the Bernoulli


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


def test_log_bernoulli_of_expanded_binary_images_matches_reference():
    # evaluation and IWAE pass one image per row expanded over the samples: x [B, 1, D] -> [B, N, D]
    x = torch.bernoulli(torch.full((3, 1, 10), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    logits = rand(3, 5, 10, seed=12, scale=4)
    ref = Independent(Bernoulli(logits=logits), 1).log_prob(x.expand(3, 5, 10).clone())  # [3, 5]
    torch.testing.assert_close(log_bernoulli(x.expand(3, 5, 10), logits), ref, rtol=1e-12, atol=1e-12)
    shared = rand(10, seed=13, scale=4)  # logits broadcast too: the result still has x's rows
    got = log_bernoulli(x.expand(3, 5, 10), shared)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, Independent(Bernoulli(logits=shared), 1).log_prob(x.expand(3, 5, 10).clone()))


def test_log_bernoulli_of_grey_values_is_the_cross_entropy():
    x = torch.tensor([[0.0, 0.25, 1.0, 0.5, 0.9]], dtype=torch.float64)  # not binary: the general form
    logits = torch.tensor([[2.0, -1.0, 3.0, 40.0, -7.0]], dtype=torch.float64)
    # sum_d x l - log(1 + e^l), in plain floating point
    ref = sum(xv * lv - max(lv, 0.0) - math.log1p(math.exp(-abs(lv))) for xv, lv in zip(x[0].tolist(), logits[0].tolist()))
    assert log_bernoulli(x, logits).item() == pytest.approx(ref, rel=1e-12)
    assert log_bernoulli(x.float().expand(4, 5), logits.float()).tolist() == pytest.approx([ref] * 4, rel=1e-6)


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


# ============================================================================ properties
#
# Property-based tests of the math on random shapes and extreme but valid values.
#
# Every number is checked against torch.distributions (the independent reference),
# evaluated in float64 on exactly the inputs (and, for sampling, exactly the draws)
# that vaekit saw. Ranges: B, N, K, D in 1..6; means and points in [-1e3, 1e3];
# log standard deviations in [-20, 20]; float32 and float64.
#
# Tolerances follow from rounding, not from trial and error: each result is a sum
# of a few terms, so its rounding error is at most a small multiple of
# ``eps(dtype) * sum(|terms|)``. ``scale`` below is that sum of absolute terms,
# computed in float64; it is only a tolerance scale, never the expected value.
# It also decides where finiteness is required: wherever ``scale`` (an upper bound
# of |result| and of every intermediate up to a factor of a few) fits in the dtype
# with a 1e3 headroom, the result must be finite, and it must never be NaN.
# Within these ranges only the ELBO in float32 can leave the dtype (sigma_x = e^-20
# and decoded means ~1e10 give ~1e38 nats); log_prob, both KLs and rsample fit.

LOG_2PI = math.log(2.0 * math.pi)
HEADROOM = 1e3  # finiteness is required where the result's scale is below finfo.max / HEADROOM
ULPS = 128  # error allowed, in units of eps(dtype) * scale

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run and every machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # CI machines are busy; the examples are tiny
)

DIM = st.integers(1, 6)
DTYPE = st.sampled_from([torch.float32, torch.float64])
SEED = st.integers(0, 2**31 - 1)
# the bounds themselves half of the time, so that extremes meet in one example
VALUE = st.one_of(st.sampled_from([-1e3, 0.0, 1e3]), st.floats(-1e3, 1e3))  # means and points
LOG_SIGMA = st.one_of(st.sampled_from([-20.0, 0.0, 20.0]), st.floats(-20.0, 20.0))


def tensors(shape, elements, dtype):
    """A [shape] tensor of ``dtype`` whose float64 values come from ``elements``."""
    return arrays(np.float64, shape, elements=elements).map(lambda a: torch.from_numpy(a).to(dtype))


@st.composite
def packed_params(draw, b, k, dtype):
    """Packed [B, K+1] parameters: K means, then one log std."""
    means = draw(tensors((b, k), VALUE, dtype))
    log_sigma = draw(tensors((b, 1), LOG_SIGMA, dtype))
    return torch.cat([means, log_sigma], dim=1)


def gauss_scale(sq_dist, log_sigma, k):
    """Sum of |terms| of log N(x; mu, s^2 I) = -K/2 log 2pi - K log s - |x-mu|^2 / (2 s^2), in float64."""
    return k * (0.5 * LOG_2PI + log_sigma.abs()) + 0.5 * sq_dist * torch.exp(-2.0 * log_sigma)


def kl_scale(params_q, params_p):
    """Sum of |terms| of the closed-form KL(q || p) between isotropic Gaussians, in float64."""
    k = params_q.shape[1] - 1
    log_ratio = params_q[:, -1] - params_p[:, -1]
    sq_dist = (params_q[:, :-1] - params_p[:, :-1]).pow(2).sum(1)
    return k * torch.exp(2.0 * log_ratio) + sq_dist * torch.exp(-2.0 * params_p[:, -1]) + k + 2.0 * k * log_ratio.abs()


def check(ours, ref64, scale, dtype, ref_same=None):
    """ours (in ``dtype``) against the float64 reference, with finiteness where the value fits."""
    assert ours.dtype == dtype, ours.dtype
    assert ours.shape == ref64.shape, (ours.shape, ref64.shape)
    assert torch.isfinite(ref64).all() and torch.isfinite(scale).all()  # float64 always fits here
    assert not torch.isnan(ours).any(), ours
    if ref_same is not None:  # torch.distributions in the same dtype is finite => so are we
        assert torch.isfinite(ours[torch.isfinite(ref_same)]).all(), (ours, ref_same)
    fits = scale <= torch.finfo(dtype).max / HEADROOM
    assert torch.isfinite(ours[fits]).all(), (ours, ref64)
    err = (ours.to(torch.float64) - ref64).abs()[fits]
    tol = (ULPS * torch.finfo(dtype).eps * scale)[fits]
    assert (err <= tol).all(), f"ours {ours.tolist()}, reference {ref64.tolist()}, err {err.tolist()} > tol {tol.tolist()}"


# ----------------------------------------------------------------------------- log_prob


@SETTINGS
@given(st.data(), DIM, DIM, DIM, DTYPE)
def test_log_prob_matches_reference_on_extreme_values(data, b, n, k, dtype):
    x = data.draw(tensors((b, n, k), VALUE, dtype), label="x")
    mu = data.draw(tensors((b, n, k), VALUE, dtype), label="mu")
    log_sigma = data.draw(tensors((b, n), LOG_SIGMA, dtype), label="log_sigma")

    ours = log_prob(x, mu, log_sigma)

    x64, mu64, ls64 = x.double(), mu.double(), log_sigma.double()
    ref64 = Normal(mu64, ls64.exp()[..., None]).log_prob(x64).sum(-1)
    ref_same = Normal(mu, log_sigma.exp()[..., None]).log_prob(x).sum(-1)
    check(ours, ref64, gauss_scale((x64 - mu64).pow(2).sum(-1), ls64, k), dtype, ref_same)


# ----------------------------------------------------------------------------- KL, closed form


@SETTINGS
@given(st.data(), DIM, DIM, DTYPE)
def test_kl_exact_matches_reference_and_is_nonnegative(data, b, k, dtype):
    pq = data.draw(packed_params(b, k, dtype), label="params_q")
    pp = data.draw(packed_params(b, k, dtype), label="params_p")

    ours = kl_q_p_exact(pq, pp)

    pq64, pp64 = pq.double(), pp.double()
    ref64 = kl_divergence(ref_dist(pq64), ref_dist(pp64)).sum(-1)
    ref_same = kl_divergence(ref_dist(pq), ref_dist(pp)).sum(-1)
    scale = kl_scale(pq64, pp64)
    check(ours, ref64, scale, dtype, ref_same)
    # KL >= 0, up to rounding
    assert (ours.double() >= -ULPS * torch.finfo(dtype).eps * scale).all(), ours


@SETTINGS
@given(st.data(), DIM, DIM, DTYPE)
def test_kl_exact_is_zero_for_equal_distributions(data, b, k, dtype):
    p = data.draw(packed_params(b, k, dtype), label="params")
    ours = kl_q_p_exact(p, p.clone())
    assert ours.shape == (b,) and ours.dtype == dtype
    # every term cancels exactly: K*1 + 0 - K - 0; allow a few ulps of K for other formulations
    assert (ours.abs() <= 8 * torch.finfo(dtype).eps * k).all(), ours


# ----------------------------------------------------------------------------- KL, Monte Carlo


@SETTINGS
@given(st.data(), DIM, DIM, DIM, DTYPE, st.booleans(), SEED)
def test_kl_mc_matches_reference_on_the_same_samples(data, b, n, k, dtype, from_q, seed):
    pq = data.draw(packed_params(b, k, dtype), label="params_q")
    pp = data.draw(packed_params(b, k, dtype), label="params_p")
    if from_q:  # samples of q drawn by the reference (up to ~1e3 + 5 * e^20)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = ref_dist(pq).sample([n]).permute(1, 0, 2)  # [B, N, K]
    else:  # the formula holds for any points
        samples = data.draw(tensors((b, n, k), VALUE, dtype), label="samples")

    ours = kl_q_p_mc(samples, pq, pp)

    s64 = samples.double().permute(1, 0, 2)  # [N, B, K] broadcasts against [B, K]
    pq64, pp64 = pq.double(), pp.double()
    ref64 = (ref_dist(pq64).log_prob(s64).sum(-1) - ref_dist(pp64).log_prob(s64).sum(-1)).mean(0)
    s = samples.permute(1, 0, 2)
    ref_same = (ref_dist(pq).log_prob(s).sum(-1) - ref_dist(pp).log_prob(s).sum(-1)).mean(0)
    scale = (
        gauss_scale((s64 - pq64[:, :-1]).pow(2).sum(-1), pq64[:, -1], k)
        + gauss_scale((s64 - pp64[:, :-1]).pow(2).sum(-1), pp64[:, -1], k)
    ).mean(0)  # [B]
    check(ours, ref64, scale, dtype, ref_same)


# ----------------------------------------------------------------------------- rsample


@SETTINGS
@given(st.data(), DIM, DIM, DIM, DTYPE, SEED)
def test_rsample_draws_the_reference_stream_on_extreme_values(data, b, n, k, dtype, seed):
    pq = data.draw(packed_params(b, k, dtype), label="params_q").requires_grad_()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ours = rsample(pq, n)
        torch.manual_seed(seed)
        ref = ref_dist(pq).rsample([n]).permute(1, 0, 2)
    assert ours.shape == (b, n, k) and ours.dtype == dtype
    assert ours.requires_grad  # reparameterized: gradients reach params_q
    assert torch.isfinite(ref).all()  # |z| <= 1e3 + ~6 e^20 fits even in float32
    assert torch.isfinite(ours).all()
    assert torch.equal(ours, ref)


# ----------------------------------------------------------------------------- the ELBO


@SETTINGS
@given(st.data(), DIM, DIM, DIM, DIM, DTYPE, LOG_SIGMA, SEED)
def test_elbo_matches_reference_on_extreme_values(data, b, n, k, d, dtype, log_sig_x, seed):
    x = data.draw(tensors((b, d), VALUE, dtype), label="x")
    pq = data.draw(packed_params(b, k, dtype), label="params_q")
    w = data.draw(tensors((k, d), st.floats(-2.0, 2.0), dtype), label="decoder weights")
    decoder = lambda z: z @ w  # a fixed linear map, [B, N, K] -> [B, N, D]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ours = elbo(x, pq, n, decoder, log_sig_x)
        torch.manual_seed(seed)
        q = ref_dist(pq)
        z = q.rsample([n]).permute(1, 0, 2)  # the reference's draws, in dtype: [B, N, K]
    mu_x = decoder(z).double()  # [B, N, D]

    x64, pq64 = x.double(), pq.double()
    lsx64 = torch.tensor(log_sig_x, dtype=dtype).double()  # the value elbo sees after its cast
    rec = Normal(mu_x, lsx64.exp()).log_prob(x64[:, None, :]).sum(-1).mean(1)  # [B]
    q64 = ref_dist(pq64)
    prior = Normal(torch.zeros_like(q64.loc), torch.ones_like(q64.scale))
    ref64 = -rec + kl_divergence(q64, prior).sum(-1)

    rec_scale = gauss_scale((x64[:, None, :] - mu_x).pow(2).sum(-1), lsx64, d).mean(1)
    scale = rec_scale + kl_scale(pq64, torch.zeros_like(pq64))
    check(ours, ref64, scale, dtype)


def test_elbo_float32_overflow_is_plus_inf_not_nan():
    """Past float32's range (sigma_x = e^-20, decoded means ~1e12) the loss is +inf, and float64 is exact."""
    b, n, k, d = 3, 4, 6, 6
    x = torch.full((b, d), 1e3, dtype=torch.float64)
    pq = torch.cat([torch.full((b, k), -1e3), torch.full((b, 1), 20.0)], dim=1).double()
    w = torch.full((k, d), 1e3, dtype=torch.float64)
    results = {}
    for dtype in (torch.float32, torch.float64):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            results[dtype] = elbo(x.to(dtype), pq.to(dtype), n, lambda z, dtype=dtype: z @ w.to(dtype), -20.0)
            torch.manual_seed(0)
            z = ref_dist(pq.to(dtype)).rsample([n]).permute(1, 0, 2)
        mu_x = (z @ w.to(dtype)).double()
        rec = Normal(mu_x, math.exp(-20.0)).log_prob(x[:, None, :]).sum(-1).mean(1)
        ref64 = -rec + kl_divergence(ref_dist(pq), Normal(0.0, 1.0)).sum(-1)
        assert torch.isfinite(ref64).all()
        if dtype == torch.float32:
            assert (ref64 > 2 * torch.finfo(torch.float32).max).all()  # the true value does not fit
            assert (results[dtype] == math.inf).all(), results[dtype]
        else:
            torch.testing.assert_close(results[dtype], ref64, rtol=1e-12, atol=0)
