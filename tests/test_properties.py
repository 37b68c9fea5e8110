"""Property-based tests of the math on random shapes and extreme but valid values.

Every number is checked against torch.distributions (the independent reference),
evaluated in float64 on exactly the inputs (and, for sampling, exactly the draws)
that vaekit saw. Ranges: B, N, K, D in 1..6; means and points in [-1e3, 1e3];
log standard deviations in [-20, 20]; float32 and float64.

Tolerances follow from rounding, not from trial and error: each result is a sum
of a few terms, so its rounding error is at most a small multiple of
``eps(dtype) * sum(|terms|)``. ``scale`` below is that sum of absolute terms,
computed in float64; it is only a tolerance scale, never the expected value.
It also decides where finiteness is required: wherever ``scale`` (an upper bound
of |result| and of every intermediate up to a factor of a few) fits in the dtype
with a 1e3 headroom, the result must be finite, and it must never be NaN.
Within these ranges only the ELBO in float32 can leave the dtype (sigma_x = e^-20
and decoded means ~1e10 give ~1e38 nats); log_prob, both KLs and rsample fit.
"""

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.distributions import Normal, kl_divergence

from vaekit import elbo, kl_q_p_exact, kl_q_p_mc, log_prob, rsample

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


def ref_normal(params):
    """torch.distributions view of packed [B, K+1] params, as [B, K] independent Normals."""
    return Normal(params[:, :-1], params[:, -1:].exp())


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
    ref64 = kl_divergence(ref_normal(pq64), ref_normal(pp64)).sum(-1)
    ref_same = kl_divergence(ref_normal(pq), ref_normal(pp)).sum(-1)
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
            samples = ref_normal(pq).sample([n]).permute(1, 0, 2)  # [B, N, K]
    else:  # the formula holds for any points
        samples = data.draw(tensors((b, n, k), VALUE, dtype), label="samples")

    ours = kl_q_p_mc(samples, pq, pp)

    s64 = samples.double().permute(1, 0, 2)  # [N, B, K] broadcasts against [B, K]
    pq64, pp64 = pq.double(), pp.double()
    ref64 = (ref_normal(pq64).log_prob(s64).sum(-1) - ref_normal(pp64).log_prob(s64).sum(-1)).mean(0)
    s = samples.permute(1, 0, 2)
    ref_same = (ref_normal(pq).log_prob(s).sum(-1) - ref_normal(pp).log_prob(s).sum(-1)).mean(0)
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
        ref = ref_normal(pq).rsample([n]).permute(1, 0, 2)
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
        q = ref_normal(pq)
        z = q.rsample([n]).permute(1, 0, 2)  # the reference's draws, in dtype: [B, N, K]
    mu_x = decoder(z).double()  # [B, N, D]

    x64, pq64 = x.double(), pq.double()
    lsx64 = torch.tensor(log_sig_x, dtype=dtype).double()  # the value elbo sees after its cast
    rec = Normal(mu_x, lsx64.exp()).log_prob(x64[:, None, :]).sum(-1).mean(1)  # [B]
    q64 = ref_normal(pq64)
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
            results[dtype] = elbo(x.to(dtype), pq.to(dtype), n, lambda z: z @ w.to(dtype), -20.0)
            torch.manual_seed(0)
            z = ref_normal(pq.to(dtype)).rsample([n]).permute(1, 0, 2)
        mu_x = (z @ w.to(dtype)).double()
        rec = Normal(mu_x, math.exp(-20.0)).log_prob(x[:, None, :]).sum(-1).mean(1)
        ref64 = -rec + kl_divergence(ref_normal(pq), Normal(0.0, 1.0)).sum(-1)
        assert torch.isfinite(ref64).all()
        if dtype == torch.float32:
            assert (ref64 > 2 * torch.finfo(torch.float32).max).all()  # the true value does not fit
            assert (results[dtype] == math.inf).all(), results[dtype]
        else:
            torch.testing.assert_close(results[dtype], ref64, rtol=1e-12, atol=0)
