"""The math against torch.distributions, the independent reference."""

import itertools
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaekit import elbo, kl_q_p_exact, kl_q_p_mc, log_prob, rsample

SHAPES = [(1, 1, 1), (1, 3, 2), (4, 1, 2), (2, 5, 1), (8, 10, 2), (3, 7, 16)]  # (B, N, K)
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


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
