"""The priors over a VQ-VAE's code grid (vaekit.codeprior): both networks are normalised (every grid enumerated),
causal in raster order (each logit changes only with earlier codes), sample their own distribution (frequencies
against the exact probabilities), learn a known distribution down to its entropy, round-trip through
safetensors; and the bits/dim of images under a VQ-VAE with a prior, on a toy case with a closed form."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vaekit.checkpoint import CheckpointError, save_weights
from vaekit.codeprior import PRIOR_NETS, CodePrior, code_nll, fit_code_prior, load_code_prior, make_code_prior, save_code_prior, vq_bits_per_dim
from vaekit.config import ModelConfig
from vaekit.model import build_model


def small(kind, m=3, grid=(2, 2), seed=0):
    torch.manual_seed(seed)
    return make_code_prior(kind, m, grid, width=8, layers=3).double()


@pytest.mark.parametrize("kind", PRIOR_NETS)
def test_the_probabilities_of_all_grids_sum_to_one(kind):
    prior = small(kind)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)  # all 81
    lp = prior.log_prob(grids)
    assert lp.dtype == torch.float64 and lp.shape == (81,)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", PRIOR_NETS)
def test_each_position_sees_only_the_codes_before_it_in_raster_order(kind):
    prior = small(kind, m=5, grid=(4, 3))
    codes = torch.randint(0, 5, (1, 4, 3), generator=torch.Generator().manual_seed(1))
    base = prior.logits(codes)
    for t in range(12):
        changed = codes.clone()
        changed.view(-1)[t] = (changed.view(-1)[t] + 1) % 5
        diff = (prior.logits(changed) - base).abs().amax(1).reshape(-1)  # [12] per position
        assert diff[: t + 1].max().item() == 0.0  # positions up to t do not see code t
        assert t == 11 or diff[t + 1].item() > 0  # the next one does


@pytest.mark.parametrize("kind", PRIOR_NETS)
def test_samples_follow_the_exact_probabilities(kind):
    prior = small(kind, grid=(2, 1), seed=2)
    grids = torch.tensor(list(itertools.product(range(3), repeat=2))).reshape(-1, 2, 1)  # all 9
    p = prior.log_prob(grids).exp()
    n = 4000
    s = prior.sample(n, torch.Generator().manual_seed(3))
    assert s.shape == (n, 2, 1) and s.dtype == torch.int64
    freq = torch.bincount(s[:, 0, 0] * 3 + s[:, 1, 0], minlength=9).double() / n
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-3).all()
    assert torch.equal(s, prior.sample(n, torch.Generator().manual_seed(3)))  # seeded


@pytest.mark.slow  # 4 s on one idle thread, 11-13 s on two busy ones
@pytest.mark.parametrize("kind", PRIOR_NETS)
def test_fitting_a_known_distribution_reaches_its_entropy(kind):
    """Codes where c_1 copies c_0 and c_0 ~ (0.5, 0.3, 0.2): the entropy is H(c_0) = 1.0297 nats per grid."""
    g = torch.Generator().manual_seed(0)
    first = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 3000, replacement=True, generator=g)
    codes = torch.stack([first, first], dim=1).reshape(-1, 1, 2)  # [N, 1, 2]
    torch.manual_seed(0)
    prior = make_code_prior(kind, 3, (1, 2), width=16, layers=2)
    fit = fit_code_prior(prior, codes, epochs=8, batch_size=300, lr=1e-2)
    entropy = -sum(p * math.log(p) for p in (0.5, 0.3, 0.2))
    nll = code_nll(prior, codes)
    assert fit["steps"] == 80 and nll.shape == (3000,)
    assert nll.mean().item() == pytest.approx(entropy, abs=0.03)


def test_save_and_load_round_trip_and_a_foreign_file_is_refused(tmp_path):
    prior = make_code_prior("pixelcnn", 7, (3, 2), width=8, layers=2)
    save_code_prior(tmp_path / "p.safetensors", prior, {"note": "mine"})
    back, info = load_code_prior(tmp_path / "p.safetensors")
    assert info == {"note": "mine"} and back.settings() == prior.settings()
    codes = torch.randint(0, 7, (4, 3, 2))
    torch.testing.assert_close(back.log_prob(codes), prior.log_prob(codes))
    save_weights(tmp_path / "other.safetensors", {"w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="other.safetensors is not a vaekit code prior"):
        load_code_prior(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"codes must be int64 of shape \[B, 3, 2\]"):
        prior.log_prob(torch.zeros(4, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="the code prior must be one of pixelcnn, transformer, got 'lstm'"):
        make_code_prior("lstm", 7, (3, 2))


class Independent(CodePrior):
    """A known prior: each position's code drawn independently from fixed probabilities [h*w, M]."""

    kind = "independent"

    def __init__(self, probs, grid):
        super().__init__(probs.shape[1], grid, 1, 1)
        self.register_buffer("lp", probs.log().T.reshape(probs.shape[1], *grid))  # [M, h, w]
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def logits(self, codes):
        return self.lp[None].expand(codes.shape[0], -1, -1, -1)  # [B, M, h, w]


def test_bits_per_dim_of_a_toy_vq_vae_with_a_known_prior_has_the_closed_form():
    """x is 1x4x4 (16 pixels), codes 2x2 of M=3; decoder mean mu(z), sigma fixed, the prior independent per position.
    E_u (x + u - mu)^2 = (x - mu)^2 + (x - mu)/256 + 1/(3 256^2) for u ~ U[0, 1/256): the decoder's expected NLL in
    closed form, compared with the estimate over many draws of u."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="vqvae", latent_dim=2, codebook_size=3, downsample=1, num_filters=3), (1, 4, 4)).double()
    sigma = 0.2
    with torch.no_grad():
        model.log_sig_x.fill_(math.log(sigma))
        model.codebook.vectors.normal_()
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    prior = Independent(probs, (2, 2)).double()
    x = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(1)).double() / 255
    reps = 400
    many = x.repeat(reps, 1, 1, 1)  # the same images, many draws of u
    out = vq_bits_per_dim(model, prior, many, seed=3)
    zq, codes = model.quantize(model.encode(x))
    mu = model.decoder(zq).detach().reshape(5, -1)  # [5, 16]
    r = x.reshape(5, -1) - mu
    e_sq = r.pow(2) + r / 256 + 1 / (3 * 256**2)  # E_u (x + u - mu)^2
    decoder = (e_sq / (2 * sigma**2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)).sum(1)  # [5] nats
    prior_nll = -sum(probs[i, codes[:, i]].log() for i in range(4))  # [5]
    exact = (decoder + prior_nll) / (16 * math.log(2)) + 8  # [5] bits/dim
    torch.testing.assert_close(out["prior_nll"][:5], prior_nll)
    est = out["bits_per_dim"].reshape(reps, 5)
    se = est.std(0) / math.sqrt(reps)
    assert ((est.mean(0) - exact).abs() < 4 * se + 1e-9).all()
    assert torch.equal(out["codes"][:5].reshape(5, -1), codes)
