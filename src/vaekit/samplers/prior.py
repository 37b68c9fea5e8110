"""z ~ p(z): the model's own prior (N(0, I) unless the model says otherwise)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..train import set_seed
from . import SAMPLERS, Sampler


@SAMPLERS.register
class PriorSampler(Sampler):
    """prior: z from the model's prior p(z)"""

    name = "prior"

    def sample_z(self, model: Any, n: int, seed: int) -> Tensor:
        set_seed(seed)  # the numbers generate_images draws after the same seed
        return model.sample_z(n)  # [n, K]

    def default_file(self, seed: int) -> str:
        return f"samples_seed{seed}.png"

    def title(self, n: int, seed: int) -> str:
        return f"{n} samples from the prior (seed {seed})"
