"""The VQ-VAE loss (--objective vqvae): eq. 3's terms written out independently (brute-force nearest codes,
torch.distributions for the reconstruction), the EMA variant, the extra terms against counts, the bound it keeps
under the exact log p(x) of an enumerable model, and the clear error for other models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Independent, Normal

from vaekit.config import ModelConfig
from vaekit.model import build_model
from vaekit.objectives import make_objective

from helpers import tiny, tiny_vq


def vq(ema=False, shape=(1, 12, 12), m=6, d=2, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="vqvae", latent_dim=d, codebook_size=m, num_filters=4, ema=ema), shape).double()
    with torch.no_grad():
        model.codebook.vectors.normal_()
        model.log_sig_x.fill_(math.log(0.4))
    return model


def reference(model, x, beta=0.25):
    """(rec, codebook, commitment, codes) with a brute-force nearest-code search and torch.distributions."""
    b = x.shape[0]
    ze = model.encoder(x).reshape(b, model.code_dim, -1).transpose(1, 2)  # [B, h*w, D]
    book = model.codebook.vectors.detach()
    codes = torch.cdist(ze.detach(), book[None].expand(b, -1, -1)).argmin(2)  # [B, h*w]
    e = book[codes]  # [B, h*w, D]
    out = model.decoder(e.transpose(1, 2).reshape(b, -1)).reshape(b, -1)
    rec = Independent(Normal(out, model.log_sig_x.exp()), 1).log_prob(x.reshape(b, -1))
    sq = (ze - e).pow(2).sum((1, 2))
    return rec, sq, sq, codes


def test_the_loss_is_eq3_written_out():
    model = vq()
    model.eval()  # no codebook update in between
    x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    t = make_objective("vqvae", {"commitment": 0.4})(model, x)
    rec, codebook, commitment, codes = reference(model, x)
    kl = model.positions * math.log(6)
    torch.testing.assert_close(t.rec, rec.detach())
    torch.testing.assert_close(t.extra["codebook"], codebook.detach())
    torch.testing.assert_close(t.extra["commitment"], commitment.detach())
    torch.testing.assert_close(t.loss.detach(), (kl - rec + codebook + 0.4 * commitment).detach())
    torch.testing.assert_close(t.elbo.detach(), (rec - kl).detach())
    counts = torch.bincount(codes.reshape(-1), minlength=6).double()
    p = counts[counts > 0] / counts.sum()
    assert t.extra["perplexity"][0].item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)
    assert t.extra["codes_used"][0].item() == (counts > 0).sum().item()
    assert all(v.shape == (4,) for v in t.extra.values())


def test_gradients_reach_the_encoder_decoder_and_codebook_and_with_ema_not_the_codebook():
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    model = vq()
    make_objective("vqvae")(model, x).loss.sum().backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0 and model.decoder[1].weight.grad.abs().sum() > 0
    assert model.codebook.vectors.grad.abs().sum() > 0
    ema = vq(ema=True)
    ema.eval()
    t = make_objective("vqvae", {"commitment": 0.25})(ema, x)
    rec, codebook, commitment, _ = reference(ema, x)
    torch.testing.assert_close(t.loss.detach(), (ema.positions * math.log(6) - rec + 0.25 * commitment).detach())
    assert not ema.codebook.vectors.requires_grad  # the moving averages learn it


def test_minus_the_loss_and_the_elbo_stay_under_the_exact_log_likelihood():
    model = tiny_vq(seed=2)
    model.eval()
    x = torch.rand(6, 1, 4, 3, dtype=torch.float64)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 grids of the 2x2 codes
    out = model.decoder(model.code_vectors(grids)).reshape(81, -1)
    exact = torch.logsumexp(Independent(Normal(out, 0.3), 1).log_prob(x.reshape(6, 1, -1)) - math.log(81), dim=1)
    t = make_objective("vqvae")(model, x)
    assert (t.elbo <= exact + 1e-12).all() and (-t.loss <= t.elbo + 1e-12).all()


def test_a_model_without_a_codebook_is_refused_naming_the_architecture():
    with pytest.raises(ValueError, match=r"objective vqvae trains a VQ-VAE and needs --arch vqvae; this model \(SimpleVAE\) has no codebook"):
        make_objective("vqvae")(tiny(), torch.rand(2, 1, 12, 12))


def test_describe_names_the_commitment_weight():
    assert make_objective("vqvae", {"commitment": 0.5}).describe() == "vqvae(commitment=0.5)"
