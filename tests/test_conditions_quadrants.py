"""The quadrants condition: the given quadrants are the bottom left (1), the left half (2) or all but the bottom right
(3), written out by hand; c holds the given pixels and zeros; the likelihood scores the missing pixels only (against
torch.distributions on them), so the ELBO's reconstruction term and the importance-sampled CLL are of
log p(x_missing | x_given) and ignore what the decoder says of the given pixels; bits/dim divide by the missing
pixels; the given part is shown as it is."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent

from vaekit.conditioning import given
from vaekit.conditions import make_condition
from vaekit.config import ModelConfig
from vaekit.evaluation import evaluate
from vaekit.model import build_model
from vaekit.objectives import make_objective

# the given pixels of a 5x5 image (rows 2.. are the bottom, columns ..1 the left), by hand
GIVEN_5x5 = {
    1: ["-----", "-----", "XX---", "XX---", "XX---"],
    2: ["XX---", "XX---", "XX---", "XX---", "XX---"],
    3: ["XXXXX", "XXXXX", "XX---", "XX---", "XX---"],
}


def quadrants(n, shape=(1, 5, 5)):
    return make_condition("quadrants", {"quadrants": n}).bind(shape)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_given_quadrants_are_the_papers_layout(n):
    want = torch.tensor([[ch == "X" for ch in row] for row in GIVEN_5x5[n]])
    cond = quadrants(n, (2, 5, 5))
    assert torch.equal(cond.given_mask(), want.expand(2, 5, 5))
    assert torch.equal(cond.scored(), ~want.expand(2, 5, 5).flatten())
    even = quadrants(n, (1, 4, 6)).given_mask()[0]  # 4x6: a quadrant is 2x3, a quarter of the pixels each
    assert int(even.sum()) == n * 6


def test_c_holds_the_given_pixels_and_the_display_puts_them_back():
    cond = quadrants(1)
    x = torch.rand(3, 1, 5, 5)
    c = cond.vector(x, None)
    mask = cond.given_mask()
    assert c.shape == (3, 25) and cond.extra_channels == 1 and cond.size == 25
    torch.testing.assert_close(cond.channels(c)[:, mask], x[:, mask])
    assert cond.channels(c)[:, ~mask].abs().sum() == 0
    decoded = torch.full_like(x, 0.5)
    shown = cond.display(c, decoded)
    torch.testing.assert_close(shown[:, mask], x[:, mask])
    assert (shown[:, ~mask] == 0.5).all()
    names, vectors = cond.choices(x, torch.tensor([7, 2, 1]))
    assert names == ["test image 0 (label 7)", "test image 1 (label 2)", "test image 2 (label 1)"] and torch.equal(vectors, c)
    assert cond.quantity() == "log p(x_missing | x_given)" and "19 pixels predicted" in cond.describe()  # 25 - the 6 of the bottom left


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="mlp", latent_dim=2, likelihood="bernoulli", condition="quadrants", options={"hidden": "16", "quadrants": 2})
    return build_model(cfg, (1, 6, 6))


def test_the_elbo_scores_only_the_missing_pixels(model):
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.4), generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 2)
    missing = ~model.condition.given_mask().flatten()  # [36]
    with torch.no_grad(), given(model, x):
        terms = make_objective("elbo")(model, x, eps=eps)
        z = model.rsample_z(model.encode(x), 1, eps)  # [4, 1, 2]
        logits = model.decode(z)[:, 0].flatten(1)  # [4, 36]
    want = Independent(Bernoulli(logits=logits[:, missing]), 1).log_prob(x.flatten(1)[:, missing])  # [4]
    torch.testing.assert_close(terms.rec, want)
    # the decoder's outputs at the given pixels do not count: change them, the likelihood stays
    changed = logits.clone()
    changed[:, ~missing] = 7.0
    lik = model.likelihood
    torch.testing.assert_close(lik.log_prob(x.flatten(1)[:, None], changed[:, None], model.log_sig_x)[:, 0], want)
    assert lik.scored_dims == 18 and lik.name == "bernoulli"


def test_eval_reports_the_cll_per_missing_pixel(model):
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.3), generator=torch.Generator().manual_seed(2))
    result = evaluate(model, x, k=3, n_samples=2)
    assert result["dims"] == 18  # the missing pixels
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (18 * math.log(2)), rel=1e-3)
    assert result["log_likelihood"] > -18 * math.log(2) * 10  # a probability of 18 binary pixels, not of 36
