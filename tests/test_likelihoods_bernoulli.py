"""The Bernoulli likelihood against torch.distributions."""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent

from vaekit.likelihoods.bernoulli import Bernoulli

B, N, D = 3, 4, 5


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    out = 3 * torch.randn(B, N, D, generator=g, dtype=torch.float64)
    return x, out


def test_bernoulli_is_bernoulli_of_the_logits():
    x, out = data(2)
    x = torch.bernoulli(x)
    got = Bernoulli().log_prob(x, out, torch.zeros(()))
    torch.testing.assert_close(got, Independent(TorchBernoulli(logits=out), 1).log_prob(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(Bernoulli().mean(out), torch.sigmoid(out))


