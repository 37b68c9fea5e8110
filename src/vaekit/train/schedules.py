"""What changes with the step: the learning rate's schedule and warm-up, and the KL weight's warm-up."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ANNEAL_FRACTION", "lr_factor", "lr_warmup_factor", "kl_beta", "LearningRate"]

ANNEAL_FRACTION = 0.2  # "anneal": the last 20% of the run


def lr_factor(schedule: str, frac: float) -> float:
    """Multiplier of the base learning rate at ``frac`` in [0, 1] of the run.

    constant: 1. cosine: 0.5 (1 + cos(pi frac)). anneal: 1, then linear to 0 over the
    last ANNEAL_FRACTION of the run (a long constant phase, then a short decay).
    """
    frac = min(max(frac, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "anneal":
        return min(1.0, (1.0 - frac) / ANNEAL_FRACTION)
    return 1.0


def lr_warmup_factor(warmup: int, step: int) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based): (step + 1) / warmup for the
    first ``warmup`` steps, then 1 (a linear warm-up, Goyal et al. 2017). Adam's first steps at full lr
    can switch off every ReLU of a conv encoder for good; rising to it avoids that (benchmarks/README.md)."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def kl_beta(cfg: Any, step: int) -> float:
    """The KL weight at optimizer step ``step``: ``cfg.beta``, reached linearly from 0 over ``cfg.kl_warmup`` steps."""
    if cfg.kl_warmup <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, step / cfg.kl_warmup)


class LearningRate:
    """Sets the optimizer's learning rate before each step: ``cfg.lr`` x the schedule at the run's fraction x the warm-up."""

    def __init__(self, cfg: Any):
        self.base, self.schedule, self.warmup = cfg.lr, cfg.lr_schedule, cfg.lr_warmup
        self.constant = self.schedule == "constant" and self.warmup <= 0  # then Adam keeps cfg.lr throughout

    def apply(self, opt: Any, step: int, frac: float) -> None:
        """``frac``: how far through the run (``StopPolicy.fraction``); ``step``: optimizer steps done."""
        if self.constant:
            return
        for g in opt.param_groups:
            g["lr"] = self.base * lr_factor(self.schedule, frac) * lr_warmup_factor(self.warmup, step)
