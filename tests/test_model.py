"""The VAE model (SimpleVAE, the assignment's layout), its likelihood and posterior options, and generation."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from vaekit import SimpleVAE, generate_images, set_seed

from helpers import SIZE, TOL, grey_images, model_terms, rand, ref_terms, tiny

ASSIGNMENT_KEYS = [
    "log_sig_x",
    "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "encoder.5.weight", "encoder.5.bias",
    "decoder.0.weight", "decoder.0.bias", "decoder.3.weight", "decoder.3.bias", "decoder.5.weight", "decoder.5.bias",
]


class AssignmentVAE(nn.Module):
    """The assignment's layer layout, written out independently of vaekit."""

    def __init__(self, K=2, F=32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, F, 5), nn.ReLU(), nn.Conv2d(F, F, 5), nn.ReLU(), nn.Flatten(), nn.Linear(F * 20 * 20, K + 1)
        )
        self.decoder = nn.Sequential(
            nn.Linear(K, F * 20 * 20), nn.Unflatten(1, (F, 20, 20)), nn.ReLU(),
            nn.ConvTranspose2d(F, F, 5), nn.ReLU(), nn.ConvTranspose2d(F, 1, 5),
        )
        self.log_sig_x = nn.Parameter(torch.zeros(()))


def test_shapes():
    m = SimpleVAE(K=3, num_filters=8)
    x = torch.rand(5, 1, 28, 28)
    assert m.encode(x).shape == (5, 4)
    assert m.decode(torch.randn(5, 7, 3)).shape == (5, 7, 1, 28, 28)
    assert m(x, 2).shape == (5, 2, 1, 28, 28)
    assert m.elbo(x, 2).shape == ()
    assert m.loss(x, 2).shape == (5,)


def test_parameter_names_are_the_assignments():
    assert sorted(SimpleVAE().state_dict()) == sorted(ASSIGNMENT_KEYS)


def test_assignment_state_dict_loads_and_computes_the_same():
    torch.manual_seed(0)
    ref = AssignmentVAE()
    with torch.no_grad():
        ref.log_sig_x.fill_(-1.3)
    m = SimpleVAE()
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(4, 1, 28, 28)
    z = torch.randn(4, 3, 2)
    torch.testing.assert_close(m.encode(x), ref.encoder(x))
    torch.testing.assert_close(m.decode(z), ref.decoder(z.reshape(12, 2)).reshape(4, 3, 1, 28, 28))


def test_model_elbo_matches_reference():
    torch.manual_seed(0)
    m = SimpleVAE(K=2, num_filters=4).double()
    with torch.no_grad():
        m.log_sig_x.fill_(-0.5)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(11)
    got = m.elbo(x, 5)
    torch.manual_seed(11)
    phi = m.encoder(x)
    q = Normal(phi[:, :-1], phi[:, -1:].exp())
    z = q.rsample([5]).permute(1, 0, 2)  # [B, N, K]
    mu = m.decoder(z.reshape(15, 2)).reshape(3, 5, 784)
    rec = Normal(mu, m.log_sig_x.exp()).log_prob(x.reshape(3, 1, 784)).sum(-1).mean(1)
    kl = kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc))).sum(-1)
    torch.testing.assert_close(got, (rec - kl).mean())


def test_generate_images_is_deterministic_under_a_seed():
    m = SimpleVAE(num_filters=4)
    set_seed(5)
    a = generate_images(m, K=2, n_images=9)
    set_seed(5)
    b = generate_images(m, n_images=9)
    set_seed(6)
    c = generate_images(m, n_images=9)
    assert a.shape == (9, 1, 28, 28)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="K=3"):
        generate_images(m, K=3)


def test_bad_inputs():
    m = SimpleVAE(num_filters=4)
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        m.elbo(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="samples_z"):
        m.decode(torch.randn(2, 3))
    with pytest.raises(ValueError, match="K"):
        SimpleVAE(K=0)


def test_channels_last_decoder_computes_the_same():
    torch.manual_seed(0)
    m = SimpleVAE(K=3, num_filters=6).double()
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    ref = m.decode(z)
    m.to(memory_format=torch.channels_last)
    assert m.decoder[3].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(m.decode(z), ref)
    # and the state_dict is unchanged by the layout
    m2 = SimpleVAE(K=3, num_filters=6).double()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.decode(z), ref)


# ============================================================================ likelihood and posterior options


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
