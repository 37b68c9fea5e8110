"""The VQ-VAE (--arch vqvae): shapes, nearest codes against a brute-force search, the straight-through gradient,
its latent-variable interface against the uniform prior written out, its ELBO and IS estimate against the exact
log p(x) by enumerating every code grid, the EMA update against appendix A.1's formula by hand, dead-code restarts,
and the posteriors and priors it refuses."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Independent, Normal

from vaekit.architectures.vqvae import DEAD_USAGE, EMA_EPS, VQVAE, Codebook, perplexity
from vaekit.config import ModelConfig
from vaekit.evaluation import evaluate, log_likelihood
from vaekit.model import build_model
from vaekit.objectives import make_objective

from helpers import tiny_vq


def vq(shape=(1, 28, 28), **options):
    options = {"codebook_size": 8, "num_filters": 4, **options}
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="vqvae", latent_dim=3, options=options), shape)


@pytest.mark.parametrize("shape,downsample,grid", [((1, 28, 28), 2, (7, 7)), ((3, 32, 32), 2, (8, 8)), ((1, 25, 25), 2, (7, 7)),
                                                   ((3, 16, 24), 3, (2, 3)), ((1, 28, 28), 1, (14, 14))])
def test_the_code_grid_and_the_decoder_restore_the_image_shape(shape, downsample, grid):
    model = vq(shape, downsample=downsample)
    assert isinstance(model, VQVAE) and model.grid == grid and model.latent_dim == 3 * grid[0] * grid[1]
    x = torch.rand(2, *shape)
    assert model.encode(x).shape == (2, model.latent_dim)
    assert model.codes(x).shape == (2, *grid) and model.codes(x).dtype == torch.int64
    assert model.decode(model.rsample_z(model.encode(x), 3)).shape == (2, 3, *shape)


def test_an_image_too_small_for_the_downsampling_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"arch vqvae with downsample 3 .* needs at least 9x9 pixels, got 8x8; lower --downsample"):
        vq((1, 8, 8), downsample=3)


@pytest.mark.parametrize("kind,name", [("posterior", "diagonal"), ("prior", "toy-wide")])
def test_other_posteriors_and_priors_are_refused_in_one_clear_error(kind, name):
    from types import SimpleNamespace

    from vaekit.architectures.vqvae import VQVAEArch

    parts = {"posterior": SimpleNamespace(name="isotropic"), "prior": SimpleNamespace(name="standard-normal")}
    parts[kind] = SimpleNamespace(name=name)  # a prior registered by a plugin, say
    with pytest.raises(ValueError, match=f"arch vqvae has its own {kind} .* and takes no --{kind} {name}; leave --{kind} at its default"):
        VQVAEArch().build_model((1, 28, 28), 3, "gaussian", parts["posterior"], parts["prior"])
    if kind == "posterior":  # from a config too
        with pytest.raises(ValueError, match="takes no --posterior diagonal"):
            build_model(ModelConfig(arch="vqvae", posterior=name), (1, 28, 28))


def test_quantize_picks_the_nearest_code_and_lays_vectors_out_as_d_h_w():
    model = vq()
    x = torch.rand(4, 1, 28, 28)
    phi = model.encode(x)  # [B, D*h*w]
    ze = phi.reshape(4, 3, 49)  # [B, D, h*w]
    book = model.codebook.vectors.detach()  # [M, D]
    brute = torch.cdist(ze.transpose(1, 2).reshape(-1, 3).double(), book.double()).argmin(1).reshape(4, 49)
    zq, codes = model.quantize(phi)
    assert torch.equal(codes, brute)
    assert torch.equal(zq.reshape(4, 3, 49), book[brute].permute(0, 2, 1))  # channel-major [D, h, w]


def test_the_straight_through_estimator_passes_the_decoders_gradient_to_the_encoder():
    model = vq()
    x = torch.rand(2, 1, 28, 28)
    phi = model.encode(x).detach().requires_grad_()
    z = model.rsample_z(phi, 1)  # [B, 1, K]
    assert torch.allclose(z[:, 0], model.quantize(phi)[0], atol=1e-6)
    model.decode(z).pow(2).sum().backward()
    zq = model.quantize(phi)[0].detach().requires_grad_()
    model.decode(zq[:, None]).pow(2).sum().backward()
    torch.testing.assert_close(phi.grad, zq.grad)  # d loss / d z_e = d loss / d z_q (eq. 3's sg)


def test_the_interface_is_a_point_mass_posterior_and_the_uniform_prior():
    model = vq()
    phi = model.encode(torch.rand(3, 1, 28, 28))
    z = model.rsample_z(phi, 4)
    assert torch.equal(z[:, 0], z[:, 3])  # every sample the same
    assert torch.equal(model.log_q(z, phi), torch.zeros(3, 4))
    uniform = -49 * math.log(8)  # 49 positions, each of 8 codes with probability 1/8
    torch.testing.assert_close(model.log_p_z(z), torch.full((3, 4), uniform))
    torch.testing.assert_close(model.kl(phi), torch.full((3,), -uniform))
    torch.manual_seed(1)
    zs = model.sample_z(500)  # [n, K]: each position's vector is a code, all codes about equally often
    codes = model.quantize(zs)[1]
    assert torch.equal(model.code_vectors(codes), zs)
    counts = torch.bincount(codes.reshape(-1), minlength=8).double()
    assert ((counts - 500 * 49 / 8).abs() < 5 * math.sqrt(500 * 49 / 8)).all()
    assert model.posterior.name == "one-hot" and model.prior.name == "uniform-codes"
    assert torch.equal(model.posterior.split(phi)[0], z[:, 0])


def exact_log_px(model, x):
    """log sum_z p(z) p(x|z) over all 81 code grids, with torch.distributions."""
    grids = torch.tensor(list(itertools.product(range(3), repeat=model.positions)))  # [81, h*w]
    z = model.code_vectors(grids)  # [81, K]
    out = model.decoder(z).reshape(81, -1)  # [81, D]
    lp = Independent(Normal(out, model.log_sig_x.exp()), 1).log_prob(x.reshape(x.shape[0], 1, -1))  # [B, 81]
    return torch.logsumexp(lp - math.log(81), dim=1)


def test_elbo_and_importance_sampled_log_likelihood_against_enumeration():
    model = tiny_vq()
    model.eval()
    x = torch.rand(5, 1, 4, 3, dtype=torch.float64)
    zq, _ = model.quantize(model.encode(x))
    out = model.decoder(zq).reshape(5, -1)
    rec = Independent(Normal(out, model.log_sig_x.exp()), 1).log_prob(x.reshape(5, -1))
    with torch.no_grad():
        terms = make_objective("elbo")(model, x)
        ll = log_likelihood(model, x, k=7)
    torch.testing.assert_close(terms.elbo, rec - math.log(81))  # log p(x|z_q) + log p(z_q) - log q(z_q|x), q one-hot
    torch.testing.assert_close(ll, (rec - math.log(81)).detach())  # every importance sample is z_q
    assert (terms.elbo <= exact_log_px(model, x) + 1e-12).all()


def test_evaluate_uses_one_sample_and_reports_the_codebook():
    model = tiny_vq()
    x = (torch.rand(6, 1, 4, 3, dtype=torch.float64) * 255).round() / 255
    result = evaluate(model, x, k=50, n_samples=10)
    assert result["k"] == 1 and result["n_samples"] == 1
    codes = model.codes(x)
    assert result["codes_used"] == len(codes.unique()) and result["codebook_size"] == 3
    p = torch.bincount(codes.reshape(-1), minlength=3).double() / codes.numel()
    assert result["codebook_perplexity"] == pytest.approx(math.exp(-(p[p > 0] * p[p > 0].log()).sum().item()), rel=1e-6)
    recon = model.decoder(model.quantize(model.encode(x))[0]).detach()
    assert result["recon_mse"] == pytest.approx((recon - x).pow(2).mean().item(), rel=1e-9)


def test_perplexity_is_one_for_one_code_and_m_for_uniform_use():
    assert perplexity(torch.zeros(10, dtype=torch.int64), 5).item() == pytest.approx(1.0)
    assert perplexity(torch.arange(5).repeat(3), 5).item() == pytest.approx(5.0)


def test_the_ema_update_follows_appendix_a1():
    book = Codebook(3, 2, ema=True, decay=0.9, restart_dead=False)
    book.train()
    old_sum, old_count = book.ema_sum.clone(), book.ema_count.clone()
    flat = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, -1.0]])
    codes = torch.tensor([0, 0, 2])  # code 1 gets nothing
    book.update(flat, codes)
    n = torch.tensor([2.0, 0.0, 1.0])
    m = torch.stack([flat[0] + flat[1], torch.zeros(2), flat[2]])
    count = 0.9 * old_count + 0.1 * n
    ema_sum = 0.9 * old_sum + 0.1 * m
    total = count.sum()
    smoothed = (count + EMA_EPS) / (total + 3 * EMA_EPS) * total
    torch.testing.assert_close(book.ema_count, count)
    torch.testing.assert_close(book.vectors, ema_sum / smoothed[:, None])


def test_dead_codes_restart_on_encoder_outputs_and_live_ones_stay():
    book = Codebook(4, 2, ema=False, restart_dead=True)
    with torch.no_grad():
        book.usage.copy_(torch.tensor([1.0, 0.0, 1.0, DEAD_USAGE / 2]))  # codes 1 and 3 are dead
    before = book.vectors.detach().clone()
    flat = torch.randn(6, 2)
    out = book.update(flat, torch.tensor([0, 0, 2, 2, 0, 2]))
    assert out["restarts"].item() == 2
    for dead in (1, 3):  # each moved onto one of the batch's vectors
        assert (book.vectors[dead] == flat).all(dim=1).any()
        assert book.usage[dead].item() == 1.0
    assert torch.equal(book.vectors[[0, 2]], before[[0, 2]])


def test_codebook_updates_happen_in_training_steps_only():
    model = vq(ema=True)
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    before = model.codebook.vectors.clone()
    make_objective("vqvae")(model, x)
    assert torch.equal(model.codebook.vectors, before)
    model.train()
    make_objective("vqvae")(model, x)
    assert not torch.equal(model.codebook.vectors, before)
