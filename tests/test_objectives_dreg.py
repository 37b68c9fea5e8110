"""The DReG objective (Tucker et al. 2019): the IWAE's value and decoder gradient on the same noise, an encoder
gradient whose mean is the gradient of the expected IWAE bound (computed by Gauss-Hermite quadrature over the noise,
and by averaging many IWAE gradients), and whose variance is lower than the IWAE encoder gradient's."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.model import build_model
from vaekit.objectives import make_objective
from vaekit.objectives.dreg import log_q_stopped

SHAPE = (1, 1, 3)  # three binary pixels
X = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).reshape(1, *SHAPE)


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models run thousands of small steps: one thread is several times faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(arch="mlp", prior="standard-normal", seed=0):
    """A tiny float64 model: K=1 (mlp), or z_1 and z_2 of one unit each (hvae); a 3-pixel Bernoulli decoder."""
    torch.manual_seed(seed)
    options = {"hidden": "3"} if arch == "mlp" else {"hidden": "3;2", "lower_layers": "1"}
    if prior == "vamp":
        options["pseudo_inputs"] = 3
    cfg = ModelConfig(arch=arch, latent_dim=1, likelihood="bernoulli", posterior="diagonal", prior=prior, options=options)
    return build_model(cfg, SHAPE).double()


def encoder_params(model):
    """The recognition model's parameters: q(z_1|x)'s network, and q(z_l|z_{l-1})'s for several layers."""
    return [p for n, p in model.named_parameters() if n.startswith(("encoder.", "q_nets."))]


def flat_grad(params):
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype) for p in params])


def objective(name, k):
    return make_objective(name, {"iw_samples": k})


def grads(model, name, k, eps, beta=1.0, weights=None, x=X):
    """The gradient of sum_m weights_m * loss_m (default: the mean loss) over the batch, for every parameter by name."""
    model.zero_grad()
    b = eps.shape[1]
    terms = objective(name, k)(model, x.expand(b, *SHAPE), eps=eps, beta=beta)
    w = torch.full((b,), 1.0 / b, dtype=torch.float64) if weights is None else weights
    (w * terms.loss).sum().backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def quadrature_gradient(model, k, beta, nodes):
    """d/dphi E_eps[-IWAE_k] by Gauss-Hermite quadrature over all k * K noise dimensions: the expectation the
    estimators estimate, computed without sampling (the total derivative, score-function term included)."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)  # int f(e) exp(-e^2/2) de ~= sum_i w_i f(t_i)
    w = w / math.sqrt(2 * math.pi)  # weights of E_{e ~ N(0, 1)}
    d = k * model.latent_dim
    grid = torch.tensor(list(itertools.product(t, repeat=d)), dtype=torch.float64)  # [M, d]
    weight = torch.tensor([math.prod(c) for c in itertools.product(w, repeat=d)], dtype=torch.float64)  # [M]
    eps = grid.reshape(-1, k, model.latent_dim).permute(1, 0, 2).contiguous()  # [k, M, K]
    g = grads(model, "iwae", k, eps, beta=beta, weights=weight)
    return torch.cat([g[n].reshape(-1) for n, p in model.named_parameters() if p in set(encoder_params(model))])


def sampled_gradients(model, name, k, beta=1.0, groups=100, batch=100, seed=0):
    """``groups`` independent means of ``batch`` encoder-gradient estimates each: [groups, P]."""
    gen = torch.Generator().manual_seed(seed)
    params = encoder_params(model)
    out = []
    for _ in range(groups):
        eps = torch.randn(k, batch, model.latent_dim, generator=gen, dtype=torch.float64)
        model.zero_grad()
        terms = objective(name, k)(model, X.expand(batch, *SHAPE), eps=eps, beta=beta)
        terms.loss.mean().backward()
        out.append(flat_grad(params))
    return torch.stack(out)


@pytest.mark.parametrize("arch,prior", [("mlp", "standard-normal"), ("hvae", "standard-normal"), ("hvae", "vamp"), ("mlp", "vamp")])
def test_value_and_decoder_gradient_are_the_iwaes_on_the_same_noise(arch, prior):
    model = small(arch, prior)
    eps = torch.randn(4, 6, model.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.bernoulli(torch.full((6, *SHAPE), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    loss = {n: objective(n, 4)(model, x, eps=eps).loss for n in ("iwae", "dreg")}
    torch.testing.assert_close(loss["dreg"], loss["iwae"], rtol=0, atol=1e-12)
    g = {n: grads(model, n, 4, eps, x=x) for n in ("iwae", "dreg")}
    encoder = {n for n, p in model.named_parameters() if p in set(encoder_params(model))}
    for name in g["iwae"]:
        if name not in encoder:  # p(x|z_1), p(z_l|z_{l+1}), the VampPrior's pseudo-inputs: exactly the IWAE's
            torch.testing.assert_close(g["dreg"][name], g["iwae"][name], rtol=0, atol=1e-12, msg=name)
    assert any(not torch.allclose(g["dreg"][n], g["iwae"][n]) for n in encoder)  # the encoder's is another estimator


def test_stopped_log_q_has_the_value_of_log_q_and_no_score_term():
    model = small("hvae")
    phi = model.encode(X.expand(2, *SHAPE))
    z = model.rsample_z(phi, 3).detach().requires_grad_()
    stopped = log_q_stopped(model, z, phi)
    torch.testing.assert_close(stopped, model.log_q(z, phi), rtol=0, atol=1e-12)
    stopped.sum().backward()
    assert all(p.grad is None for p in model.parameters())  # no parameter of q: no score-function term
    assert z.grad.abs().sum() > 0  # but the density's dependence on z (z_1 in q(z_2|z_1) too) is kept


def assert_unbiased(mean, se, exact, err=0.0):
    """Every coordinate of ``mean`` (standard errors ``se``) within 4.5 SE (+ 3 ``err``, the reference's own) of ``exact``;
    a coordinate whose gradient is zero (a weight from a pixel that is 0) must be zero in both."""
    zero = se == 0
    assert (mean[zero] == 0).all() and (exact[zero].abs() < 1e-12).all()
    gap = (mean - exact).abs()[~zero]
    tol = 4.5 * se[~zero] + 3 * (err[~zero] if isinstance(err, torch.Tensor) else err)
    assert (gap < tol).all(), (gap / se[~zero], mean, exact)


@pytest.mark.parametrize("arch,k,beta", [("mlp", 2, 1.0), ("mlp", 2, 0.4), ("hvae", 1, 1.0)])
def test_encoder_gradient_is_unbiased_against_quadrature(arch, k, beta):
    """The mean of 10,000 DReG (and IWAE) encoder gradients agrees with d/dphi E[IWAE_k] computed by Gauss-Hermite
    quadrature over the two noise dimensions (k=2 samples of one latent; one sample of z_1 and z_2 for the
    hierarchical model, where q(z_2|z_1)'s density must keep z_1's dependence on the encoder); the quadrature's
    error is taken as its change from 240 to 300 nodes."""
    model = small(arch, seed=3)
    exact = quadrature_gradient(model, k, beta, 300)
    err = (exact - quadrature_gradient(model, k, beta, 240)).abs()
    assert exact.abs().max() > 1e-2 and err.max() < 2e-3  # a gradient worth estimating, to a converged quadrature
    for name in ("dreg", "iwae"):
        g = sampled_gradients(model, name, k, beta=beta)  # [groups, P]
        assert_unbiased(g.mean(0), g.std(0) / math.sqrt(g.shape[0]), exact, err)


@pytest.mark.parametrize("prior", ["standard-normal", "vamp"])
def test_hierarchical_encoder_gradient_agrees_with_iwaes_in_expectation(prior):
    """Two layers, k=4: the means of 10,000 DReG and of 10,000 IWAE encoder gradients (independent draws) agree
    within 4.5 standard errors of their difference in every coordinate."""
    model = small("hvae", prior, seed=3)
    d, i = sampled_gradients(model, "dreg", 4, seed=1), sampled_gradients(model, "iwae", 4, seed=2)
    se = torch.sqrt(d.var(0) / d.shape[0] + i.var(0) / i.shape[0])
    assert_unbiased(d.mean(0), se, i.mean(0))


def test_dreg_encoder_gradient_has_lower_variance_than_iwaes():
    """At k=16 the summed variance of the encoder gradient is far below the IWAE's (Tucker et al. 2019, Fig. 1;
    measured here: about 1/40): from 50 group means of 50 estimates each, the ratio is below 0.3, for one layer and two."""
    for arch in ("mlp", "hvae"):
        model = small(arch, seed=3)
        var = {n: sampled_gradients(model, n, 16, groups=50, batch=50, seed=7).var(0).sum().item() for n in ("dreg", "iwae")}
        assert var["dreg"] < 0.3 * var["iwae"], (arch, var)
