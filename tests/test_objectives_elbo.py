"""The ELBO objective against known answers: the losses of vaekit 0.1 (the assignment's numbers),
torch.distributions, the calibrated sigma's optimum, and the beta-VAE weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.distributions import Normal

from vaekit import SimpleVAE
from vaekit.checkpoint import load_weights
from vaekit.objectives import make_objective

from helpers import TOL, grey_images, linear_gaussian, model_terms, ref_terms, tiny


def elbo(model, x, samples=1, **kw):
    return make_objective("elbo", {"samples": samples})(model, x, **kw)


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
