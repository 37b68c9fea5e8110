"""The likelihood kind's contract, run over every registered likelihood: shapes, gradients, names,
and the mean the latent explorer computes in the page (its JavaScript, run in Node.js) against ``mean``."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from vaekit.likelihoods import LIKELIHOODS, Likelihood, make_likelihood

B, N, D = 3, 4, 5


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    out = 3 * torch.randn(B, N, D, generator=g, dtype=torch.float64)
    return x, out


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_log_prob_is_per_sample_finite_and_differentiable(name):
    lik = make_likelihood(name)
    assert isinstance(lik, Likelihood) and lik.name == name and type(lik) is LIKELIHOODS[name]
    x, out = data()
    if lik.discrete:
        x = torch.bernoulli(x)
    out.requires_grad_()
    lp = lik.log_prob(x, out, torch.tensor(-0.3, dtype=torch.float64))
    assert lp.shape == (B, N) and lp.dtype == torch.float64 and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    # the samples of z are independent: changing one decoder output changes only its own row
    out2 = out.detach().clone()
    out2[1, 2] += 0.5
    changed = lik.log_prob(x, out2, torch.tensor(-0.3, dtype=torch.float64)) != lp.detach()
    assert changed[1, 2] and changed.sum() == 1


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_mean_is_elementwise_and_in_range(name):
    lik = make_likelihood(name)
    _, out = data(1)
    m = lik.mean(out)
    assert m.shape == out.shape
    if name != "gaussian":  # a probability or a mean on [0, 1]
        assert ((m >= 0) & (m <= 1)).all()
    torch.testing.assert_close(lik.mean(out[:1, :1]), m[:1, :1])


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the explorer's JavaScript")
@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_the_explorers_mean_in_javascript_is_the_likelihoods_mean(name):
    lik = make_likelihood(name)
    assert lik.explorer_mean_js and lik.mean_description
    values = [-40.0, -8.0, -1.0, -0.003, 0.0, 1e-4, 0.2, 1.0, 5.0, 40.0]
    script = f"var f = {lik.explorer_mean_js}; console.log(JSON.stringify({json.dumps(values)}.map(f)));"
    got = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    want = lik.mean(torch.tensor(values, dtype=torch.float64)).tolist()
    assert got == pytest.approx(want, abs=1e-9)


def test_names_and_errors():
    assert {"gaussian", "bernoulli", "continuous-bernoulli"} <= set(LIKELIHOODS)
    assert [name for name, cls in LIKELIHOODS.items() if cls.has_scale] == ["gaussian"]
    assert make_likelihood(make_likelihood("bernoulli")).name == "bernoulli"  # an instance is returned as is
    with pytest.raises(ValueError, match="likelihood must be one of .*gaussian.*, got 'poisson'"):
        make_likelihood("poisson")
