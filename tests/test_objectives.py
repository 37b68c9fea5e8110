"""The objective kind's contract, run over every registered objective: per-image terms on the model's
device, gradients to encoder and decoder, the ELBO field always the bound (compared with the ELBO
objective on the same noise), a lower bound on the exact log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit import SimpleVAE
from vaekit.config import TrainConfig
from vaekit.objectives import OBJECTIVES, Objective, Terms, make_objective
from vaekit.train import kl_beta

from helpers import SIZE, linear_gaussian, tiny


def objective(name, samples=2):
    cls = OBJECTIVES[name]
    return make_objective(name, {cls.samples_option: samples})


def vq_model(shape=(1, 28, 28), seed=0):
    """The model an objective that trains only a VQ-VAE is checked on (the contract's other checks, on its model)."""
    from vaekit.config import ModelConfig
    from vaekit.model import build_model

    torch.manual_seed(seed)
    return build_model(ModelConfig(arch="vqvae", latent_dim=2, codebook_size=4, num_filters=4), shape)


def takes(name, model, x):
    """Whether objective ``name`` trains ``model``; one that cannot says so in one clear error naming what it needs."""
    try:
        objective(name)(model, x)
        return True
    except ValueError as e:
        assert f"objective {name}" in str(e) and "needs --arch" in str(e), str(e)
        return False


@pytest.mark.parametrize("name", OBJECTIVES.names())
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_images_and_noise_on_the_cpu_follow_the_models_device(name, likelihood):
    """A model moved to another device (here "meta", which has no data, as a GPU stands in for it) gets
    images and noise from the CPU: the objective moves them, and its terms are on the model's device."""
    model = tiny(likelihood=likelihood)
    x = torch.rand(3, 1, SIZE, SIZE).round()  # [B, C, H, W] on the CPU
    if not takes(name, model, x):
        model = vq_model((1, SIZE, SIZE))
    model = model.to("meta")
    eps = torch.randn(2, 3, model.latent_dim)  # [N, B, K] on the CPU
    terms = objective(name)(model, x, eps=eps)
    assert terms.loss.device.type == "meta" and terms.loss.shape == (3,)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_gives_per_image_terms_and_gradients(name):
    torch.manual_seed(0)
    model = SimpleVAE(K=2, num_filters=4)
    x = torch.rand(5, 1, 28, 28)
    if not takes(name, model, x):
        model = vq_model()
    obj = objective(name, 3)
    assert isinstance(obj, Objective) and obj.samples == 3 and isinstance(obj.describe(), str)
    terms = obj(model, x, calibrated=True, dataset_size=100)
    assert isinstance(terms, Terms)
    assert all(t.shape == (5,) for t in (terms.loss, terms.elbo, terms.rec, terms.kl))
    assert all(t.shape == (5,) for t in (terms.extra or {}).values())
    terms.loss.mean().backward()
    first = [next(m for m in net.modules() if getattr(m, "weight", None) is not None) for net in (model.encoder, model.decoder)]
    assert all(m.weight.grad.abs().sum() > 0 for m in first)  # the first layer of each


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_the_elbo_field_is_the_bound_and_trains_elbo_means_loss_is_its_negative(name):
    model, x, exact = linear_gaussian(seed=4)
    if not takes(name, model, x):
        pytest.skip(f"objective {name} trains only a VQ-VAE: its bound is checked against an exact log p(x) in "
                    f"tests/test_objectives_{name.replace('-', '_')}.py")
    eps = torch.randn(3, 8, 2, dtype=torch.float64)
    terms = objective(name, 3)(model, x, eps=eps)
    z = model.rsample_z(model.encode(x), 3, eps)  # the same samples of z
    from helpers import reference_log_w

    log_w = reference_log_w(model, x, z)  # [B, 3]
    # the ELBO on these samples: with the KL in closed form (the ELBO objective) or on the samples
    closed = make_objective("elbo", {"samples": 3})(model, x, eps=eps).elbo
    assert torch.allclose(terms.elbo, closed, atol=1e-10) or torch.allclose(terms.elbo, log_w.mean(1), atol=1e-10)
    if OBJECTIVES[name].trains_elbo:
        assert torch.equal(terms.loss, -terms.elbo)
    # what is trained is a lower bound on log p(x) in expectation (the exact one of this linear-Gaussian model)
    torch.manual_seed(1)
    with torch.no_grad():
        bounds = torch.stack([-objective(name, 3)(model, x).loss.mean() for _ in range(200)])
    assert bounds.mean() < exact.mean() + 3 * bounds.std() / math.sqrt(200)


def test_kl_warmup_rises_linearly_from_zero_to_beta():
    cfg = TrainConfig(beta=2.0, kl_warmup=100)
    assert [kl_beta(cfg, s) for s in (0, 25, 50, 100, 1000)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_beta(TrainConfig(beta=3.0), 0) == 3.0


def test_unknown_objective_and_option_are_refused():
    with pytest.raises(ValueError, match="objective must be one of .*elbo.*, got 'vr'"):
        make_objective("vr")
    with pytest.raises(ValueError, match="objective elbo has no option iw_samples; it takes --samples"):
        make_objective("elbo", {"iw_samples": 5})
