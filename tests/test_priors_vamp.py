"""The VampPrior: log p(z) against a brute-force mixture of torch.distributions Normals at the encoder's posteriors
of the pseudo-inputs (one layer, and the top layer of a hierarchical model), Tomczak & Welling's initialisation and
clipping of the pseudo-inputs, samples with the mixture's moments, the evaluation-time cache that follows parameter
updates, and its parameters saved and loaded with the model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaekit import SimpleVAE
from vaekit.config import ModelConfig
from vaekit.model import build_model
from vaekit.priors import make_prior
from vaekit.priors import vamp as vamp_module


def model_with_vamp(arch="mlp", posterior="diagonal", pseudo=7, latent_dim=3, seed=0):
    torch.manual_seed(seed)
    options = {"hidden": "6", "pseudo_inputs": pseudo}
    if arch == "hvae":
        options.update(hidden="6;5", lower_layers="4")
    cfg = ModelConfig(arch=arch, latent_dim=latent_dim, likelihood="bernoulli", posterior=posterior, prior="vamp", options=options)
    return build_model(cfg, (1, 3, 4)).double()


def brute_force_prior(model):
    """1/C sum_c N(z; mu_c, diag(sigma_c^2)) with torch.distributions, mu_c and sigma_c from the networks by hand."""
    u = model.prior.pseudo.clamp(0, 1)  # hardtanh to [0, 1]
    phi = model.encoder(u)
    k1 = model.layer_sizes[0] if hasattr(model, "layer_sizes") else model.latent_dim
    mu, sd = phi[:, :k1], phi[:, k1:].exp().expand(-1, k1)
    if hasattr(model, "layer_sizes"):  # the top layer along the mean path: q(z_2 | z_1 = E[z_1|u])
        top = model.q_nets[0](mu)
        k2 = model.layer_sizes[1]
        mu, sd = top[:, :k2], top[:, k2:].exp().expand(-1, k2)
    c = mu.shape[0]
    return MixtureSameFamily(Categorical(logits=torch.zeros(c, dtype=mu.dtype)), Independent(Normal(mu, sd), 1))


@pytest.mark.parametrize("arch,posterior", [("mlp", "diagonal"), ("mlp", "isotropic"), ("hvae", "diagonal"), ("hvae", "isotropic")])
def test_log_prob_is_the_mixture_of_the_posteriors_at_the_pseudo_inputs(arch, posterior, monkeypatch):
    model = model_with_vamp(arch, posterior)
    with torch.no_grad():  # pseudo-inputs spread over [0, 1] and beyond (clipped), so the components differ
        model.prior.pseudo.uniform_(-0.3, 1.3)
    z = torch.randn(5, 11, 3, dtype=torch.float64) * 2
    want = brute_force_prior(model).log_prob(z)  # [5, 11]
    torch.testing.assert_close(model.prior.log_prob(z, model), want, rtol=0, atol=1e-10)
    monkeypatch.setattr(vamp_module, "CHUNK", 20)  # three rows at a time: the chunked logsumexp agrees
    torch.testing.assert_close(model.prior.log_prob(z, model), want, rtol=0, atol=1e-10)
    if arch == "hvae":  # the model's log p(z) uses it for the top layer
        full = torch.randn(5, 11, 7, dtype=torch.float64)
        mu, log_sd = model.p_layers[0](full[..., 4:])
        ref = brute_force_prior(model).log_prob(full[..., 4:]) + Normal(mu, log_sd.exp()).log_prob(full[..., :4]).sum(-1)
        torch.testing.assert_close(model.log_p_z(full), ref, rtol=0, atol=1e-10)


def test_pseudo_inputs_start_and_clip_as_in_tomczak_and_wellings_code():
    """w ~ N(0.05, 0.01^2), u = hardtanh_[0,1](w): pixels near 0.05; a pixel pushed outside [0, 1] is clipped and
    gets no gradient."""
    torch.manual_seed(0)
    prior = make_prior("vamp", 4, (1, 28, 28), {"pseudo_inputs": 500})
    w = prior.pseudo.detach()
    assert w.shape == (500, 1, 28, 28)
    assert w.mean().item() == pytest.approx(0.05, abs=1e-4) and w.std().item() == pytest.approx(0.01, rel=0.01)
    with torch.no_grad():
        prior.pseudo[0, 0, 0, :3] = torch.tensor([-0.2, 0.5, 1.7])
    u = prior.pseudo_inputs()
    assert u[0, 0, 0, :3].tolist() == pytest.approx([0.0, 0.5, 1.0])
    u.sum().backward()
    assert prior.pseudo.grad[0, 0, 0, :3].tolist() == [0.0, 1.0, 0.0]


def test_init_from_images_and_its_errors():
    prior = make_prior("vamp", 2, (1, 3, 4), {"pseudo_inputs": 3})
    images = torch.rand(5, 1, 3, 4)
    torch.manual_seed(1)
    prior.init_from_images(images, std=0.0)
    assert torch.equal(prior.pseudo.detach(), images[:3])
    with pytest.raises(ValueError, match=r"images must have shape \[N >= 3, 1, 3, 4\], got \[2, 1, 3, 4\]"):
        prior.init_from_images(images[:2])
    with pytest.raises(ValueError, match="prior vamp needs the image shape"):
        make_prior("vamp", 2)


@pytest.mark.parametrize("arch", ["mlp", "hvae"])
def test_samples_have_the_mixtures_mean_and_covariance(arch):
    model = model_with_vamp(arch, pseudo=4)
    with torch.no_grad():
        model.prior.pseudo.uniform_(0, 1)
    mix = brute_force_prior(model)
    torch.manual_seed(3)
    z = model.prior.sample(100_000, model)  # [n, 3]
    assert z.shape == (100_000, 3) and z.dtype == torch.float64
    se = z.std(0) / math.sqrt(z.shape[0])
    assert ((z.mean(0) - mix.mean).abs() < 5 * se).all()
    comp = mix.component_distribution
    want = torch.diag(comp.variance.mean(0)) + torch.cov(comp.mean.T, correction=0)  # E_c[Cov_c] + Cov_c(mean_c)
    torch.testing.assert_close(torch.cov(z.T), want, rtol=0, atol=0.05)


def test_evaluation_cache_follows_parameter_updates():
    """Without gradients the components are computed once, and again after any parameter changes in place."""
    model = model_with_vamp("mlp")
    z = torch.randn(2, 3, 3, dtype=torch.float64)
    calls = []
    original = model.prior._components
    model.prior._components = lambda m: calls.append(1) or original(m)
    with torch.no_grad():
        first = model.log_p_z(z)
        again = model.log_p_z(z)
        assert len(calls) == 1 and torch.equal(first, again)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.log_p_z(z).sum().backward()  # with gradients: computed afresh, not cached
    opt.step()
    with torch.no_grad():
        after = model.log_p_z(z)
    assert len(calls) == 3 and not torch.allclose(after, first)
    torch.testing.assert_close(after, brute_force_prior(model).log_prob(z), rtol=1e-12, atol=1e-10)


def test_evaluation_cache_follows_a_fused_optimizer_that_leaves_version_counters_alone():
    """The trainer's fused Adam updates the weights without bumping their versions: the cache still notices."""
    model = model_with_vamp("mlp")
    z = torch.randn(2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        first = model.log_p_z(z)
    opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    versions = [p._version for p in model.parameters()]
    model.log_p_z(z).sum().backward()
    opt.step()
    assert [p._version for p in model.parameters()] == versions  # what made the version-keyed cache stale
    with torch.no_grad():
        after = model.log_p_z(z)
    assert (after - first).abs().max() > 1e-3  # the update moved the prior
    torch.testing.assert_close(after, brute_force_prior(model).log_prob(z), rtol=1e-12, atol=1e-10)


def test_the_test_bound_during_training_is_that_of_the_weights_then():
    """An evaluation at each epoch's end of ``fit`` (fused Adam) equals that of a fresh copy of the weights then."""
    from vaekit import TrainConfig, evaluate_elbo, fit

    model = model_with_vamp("mlp").float()
    images = (torch.rand(40, 1, 3, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.02, lr_schedule="constant", calibrated=False, device="cpu", precision="fp32",
                      objective="iwae", options={"iw_samples": 3})
    seen = []

    def on_epoch_end(epoch, stats):
        fresh = model_with_vamp("mlp").float()
        fresh.load_state_dict(model.state_dict())
        got, want = evaluate_elbo(model, images, n_samples=2, seed=0), evaluate_elbo(fresh, images, n_samples=2, seed=0)
        seen.append(got["elbo"])
        assert got["elbo"] == pytest.approx(want["elbo"], abs=1e-9)

    fit(model, images, cfg, progress=False, on_epoch_end=on_epoch_end)
    assert len(seen) == 3 and len(set(seen)) == 3  # the weights moved between the evaluations


def test_parameters_are_saved_with_the_model_and_standard_normal_state_dicts_still_load():
    model = model_with_vamp("hvae")
    state = model.state_dict()
    assert state["prior.pseudo"].shape == (7, 1, 3, 4)
    twin = model_with_vamp("hvae", seed=5)
    assert not torch.equal(twin.prior.pseudo, model.prior.pseudo)
    twin.load_state_dict(state)
    z = torch.randn(2, 4, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(twin.log_p_z(z), model.log_p_z(z), rtol=0, atol=0)
    # the standard-normal prior has no parameters: a state_dict without prior.* (an old run's) loads as before
    old = SimpleVAE(K=2, num_filters=4).state_dict()
    assert not any(k.startswith("prior.") for k in old)
    SimpleVAE(K=2, num_filters=4).load_state_dict(old)
