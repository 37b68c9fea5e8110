"""What changes with the step (vaekit.train.schedules): the learning rate's schedules and warm-up, the KL weight."""

import pytest
import torch

from vaekit import TrainConfig, fit
from vaekit.train import kl_beta, lr_factor

from helpers import grey_images, tiny


@pytest.mark.parametrize(
    "schedule,frac,expected",
    [
        ("constant", 0.7, 1.0),
        ("cosine", 0.0, 1.0), ("cosine", 0.5, 0.5), ("cosine", 1.0, 0.0),
        ("anneal", 0.0, 1.0), ("anneal", 0.8, 1.0), ("anneal", 0.9, 0.5), ("anneal", 1.0, 0.0), ("anneal", 1.5, 0.0),
    ],
)
def test_lr_schedules(schedule, frac, expected):
    assert lr_factor(schedule, frac) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_warmup_rises_linearly_to_the_schedules_lr(monkeypatch, schedule):
    """The lr Adam steps with (read off the optimizer at each step): L (s + 1) / W for the first W steps, then
    the schedule's L * lr_factor(s / total); warm-up 0 leaves the schedule alone."""
    seen = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **kw: (seen.append(self.param_groups[0]["lr"]), real_step(self, *a, **kw))[1])
    x = grey_images(32, seed=3)
    for warmup in (4, 0):
        seen.clear()
        cfg = TrainConfig(batch_size=4, max_steps=8, epochs=1, lr=2e-3, lr_warmup=warmup, lr_schedule=schedule, device="cpu")
        fit(tiny(), x, cfg, progress=False)
        want = [2e-3 * lr_factor(schedule, s / 8) * (min(1.0, (s + 1) / warmup) if warmup else 1.0) for s in range(8)]
        assert seen == pytest.approx(want, rel=1e-12), warmup


@pytest.mark.parametrize("beta, warmup, step, expected", [(1.0, 0, 0, 1.0), (4.0, 0, 7, 4.0), (2.0, 10, 0, 0.0), (2.0, 10, 5, 1.0),
                                                          (2.0, 10, 10, 2.0), (2.0, 10, 50, 2.0)])
def test_kl_beta_rises_linearly_over_the_warmup(beta, warmup, step, expected):
    assert kl_beta(TrainConfig(beta=beta, kl_warmup=warmup), step) == pytest.approx(expected, abs=1e-12)
