"""How the condition reaches the networks (vaekit.conditioning), against closed forms and one process.

A linear-Gaussian conditional model, p(z) = N(0, I), p(x|z, c) = N(W z + M c + b, s^2 I), has
log p(x_s | c) = log N(x_s; (M c + b)_s, W_s W_s^T + s^2 I) over the scored pixels s, and its exact posterior is
Gaussian; with W_s's columns orthogonal it is diagonal, so an encoder can be set to it. Then every importance weight
equals p(x_s|c): the importance-sampled log-likelihood (any k), the IWAE bound and ``evaluate``'s are exact, for the
label (c one-hot, all pixels) and the quadrants (c the given pixel, the missing ones scored). With a worse encoder the
estimate still reaches the closed form as k grows, the ELBO stays below it. The likelihood over scored pixels is
checked against torch.distributions, and a 2-process data-parallel run of a label-conditional model against one
process with the same global batch.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from vaekit import VAE
from vaekit.checkpoint import load_weights
from vaekit.conditioning import ScoredLikelihood, conditional_likelihood, conditional_networks, given
from vaekit.conditions import make_condition
from vaekit.evaluation import evaluate, evaluate_elbo, log_likelihood
from vaekit.likelihoods import make_likelihood
from vaekit.objectives import make_objective

from helpers import write_idx

SIGMA = 0.5
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.3, 0.0], [1.0, 0.0]], dtype=torch.float64)  # orthogonal columns, also without row 2
B = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)


class Linear2x2:
    """An architecture of one Linear each way for 2x2 images (``build`` as vaekit's architectures have it)."""

    def build(self, image_shape, latent_dim, num_params):
        c, h, w = image_shape
        return (nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_params)),
                nn.Sequential(nn.Linear(latent_dim, c * h * w), nn.Unflatten(1, (c, h, w))))


def linear_gaussian(name, options, encoder_scale=0.0):
    """The model, set to its exact posterior (``encoder_scale`` > 0: log stds that much too wide), and M [4, S]."""
    torch.manual_seed(0)
    cond = make_condition(name, options)
    enc, dec = conditional_networks(cond, Linear2x2(), (1, 2, 2), 2, 4)
    s = cond.size
    m = torch.randn(4, s, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    scored = cond.scored() if cond.scored() is not None else torch.ones(4, dtype=torch.bool)
    ws = W[scored]  # [D', 2]
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + ws.T @ ws / SIGMA**2)  # the exact posterior's [2, 2], diagonal
    a = cov @ ws.T / SIGMA**2  # [2, D']: mu = a (x_s - (M c + b)_s)
    with torch.no_grad():
        dec.net[0].weight.copy_(torch.cat([W, m], dim=1))
        dec.net[0].bias.copy_(B)
        weight = torch.zeros(4, 4 + 4 * cond.extra_channels, dtype=torch.float64)  # [phi, x pixels then c's channels]
        pixel = torch.arange(4)[scored]
        weight[:2, pixel] = a
        channel_of = cond.channels(torch.eye(s, dtype=torch.float64)).flatten(1)  # [S, E*4]: the inputs c_j reaches
        weight[:2, 4:] = -(a @ m[scored]) @ (channel_of / channel_of.sum(dim=1, keepdim=True))  # summed: -a (M c)_s
        enc.net[1].weight.copy_(weight)
        enc.net[1].bias.copy_(torch.cat([-a @ B[scored], 0.5 * torch.log(torch.diagonal(cov)) + encoder_scale]))
    model = VAE(enc, dec, 2, likelihood=conditional_likelihood(make_likelihood("gaussian"), cond), posterior="diagonal",
                image_shape=(1, 2, 2)).double()
    model.condition = cond
    model.log_sig_x.data.fill_(math.log(SIGMA))
    return model, m, scored


def exact(x, c, m, scored):
    """log p(x_s | c) [B] in closed form."""
    mean = (c @ m.T + B)[:, scored]  # [B, D']
    ws = W[scored]
    cov = ws @ ws.T + SIGMA**2 * torch.eye(len(ws), dtype=torch.float64)
    return MultivariateNormal(mean, cov).log_prob(x.flatten(1)[:, scored])


CASES = [("label", {"classes": 3}), ("quadrants", {"quadrants": 1})]


def data(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0][:n])


@pytest.mark.parametrize("name,options", CASES)
def test_with_the_exact_posterior_every_estimate_is_the_closed_form(name, options):
    model, m, scored = linear_gaussian(name, options)
    x, y = data()
    c = model.condition.vector(x, y)
    want = exact(x, c, m, scored)  # [6]
    with given(model, x, y):
        for k in (1, 4):
            torch.testing.assert_close(log_likelihood(model, x, k=k), want)
        iwae = make_objective("iwae", {"iw_samples": 3})(model, x)
    torch.testing.assert_close(-iwae.loss, want)
    result = evaluate(model, x, k=2, n_samples=3, labels=y)
    assert result["log_likelihood"] == pytest.approx(want.mean().item(), rel=1e-7)
    assert result["dims"] == int(scored.sum())
    if name == "label":  # the label matters: another label, another likelihood, still exact
        other = (y + 1) % 3
        with given(model, x, other):
            got = log_likelihood(model, x, k=2)
        torch.testing.assert_close(got, exact(x, model.condition.vector(x, other), m, scored))
        assert not torch.allclose(got, want)


@pytest.mark.parametrize("name,options", CASES)
def test_with_a_worse_posterior_the_estimate_reaches_the_closed_form_and_the_elbo_stays_below(name, options):
    model, m, scored = linear_gaussian(name, options, encoder_scale=0.4)
    x, y = data()
    want = exact(x, model.condition.vector(x, y), m, scored)
    with given(model, x, y):
        few, many = log_likelihood(model, x, k=1, seed=0), log_likelihood(model, x, k=20_000, seed=0)
    assert (many - want).abs().max() < 0.02
    assert (few - want).abs().max() > 0.05  # k = 1 is not exact here: the test can tell
    elbo = evaluate_elbo(model, x, n_samples=4000, labels=y)
    assert elbo["elbo"] < want.mean().item() - 0.01


def test_the_scored_likelihood_is_the_likelihood_of_the_scored_pixels():
    mask = torch.tensor([True, False, True, True, False])
    x, out = torch.rand(2, 3, 5, dtype=torch.float64), torch.rand(2, 3, 5, dtype=torch.float64)
    lik = ScoredLikelihood(make_likelihood("gaussian"), mask)
    want = Independent(Normal(out[..., mask], 0.3), 1).log_prob(x[..., mask])  # [2, 3]
    torch.testing.assert_close(lik.log_prob(x, out, torch.tensor(math.log(0.3))), want)
    calibrated = lik.calibrated_log_sig_x(x, out, lambda t: t.mean())
    torch.testing.assert_close(calibrated, 0.5 * torch.log(((x - out)[..., mask] ** 2).mean()))
    assert lik.scored_dims == 3 and lik.has_scale and lik.mean(out) is out
    with pytest.raises(ValueError, match=r"takes \[B, N, D=5\] pixels"):
        lik.log_prob(x[..., :4], out[..., :4], torch.tensor(0.0))
    assert conditional_likelihood(lik.inner, make_condition("label", {"classes": 2})) is lik.inner  # all pixels: itself


@pytest.mark.slow  # two vaekit train launches, one of them 2 processes under torchrun: ~40 s on the 2-core CPU
def test_two_processes_train_a_conditional_model_as_one_process_with_the_same_global_batch(mnist, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n, images, labels in (("train", 97, mnist.train_images, mnist.train_labels), ("t10k", 32, mnist.test_images, mnist.test_labels)):
        write_idx(folder / f"{split}-images-idx3-ubyte", (images[:n, 0] * 255).round().numpy())
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels[:n].numpy())
    common = ["-m", "vaekit", "train", "--dataset", str(folder), "--condition", "label", "--arch", "mlp", "--hidden", "16",
              "--epochs", "2", "--samples", "2", "--eval-samples", "2", "--device", "cpu", "--precision", "fp32", "--seed", "5",
              "--no-progress"]  # fp32: the tolerances below are fp32's
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one"), "--batch-size", "16"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "two"), "--batch-size", "8", "--distributed",
                          "--nproc-per-node", "2"], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    a, _ = load_weights(tmp_path / "one" / "model.safetensors")
    b, _ = load_weights(tmp_path / "two" / "model.safetensors")
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved < 1e-5, moved  # each rank held its own shard's labels (the last batch: 1 image and an empty shard)
    rows = [[json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("one", "two")]
    assert rows[0][-1]["test_elbo"] == pytest.approx(rows[1][-1]["test_elbo"], abs=1e-3)
