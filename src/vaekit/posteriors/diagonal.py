"""A Gaussian posterior with one standard deviation per latent dimension.

``--log-std-min`` / ``--log-std-max`` bound each log std, as Tomczak & Welling's VampPrior code bounds the encoder's
log-variance with hardtanh(-6, 2) (log std in [-3, 1]): a clamp, so a value pushed past a bound gets no gradient
there. Unbounded by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..registry import option
from . import POSTERIORS, Posterior


@POSTERIORS.register
class DiagonalGaussian(Posterior):
    """diagonal: one std per latent dimension; phi = [K means, K log stds], P = 2K"""

    name = "diagonal"

    @dataclass
    class Options:
        log_std_min: float | None = option(None, "diagonal posterior: the least log std (Tomczak & Welling: -3); omit for unbounded")
        log_std_max: float | None = option(None, "diagonal posterior: the greatest log std (Tomczak & Welling: 1); omit for unbounded")

        def __post_init__(self) -> None:
            low, high = self.log_std_min, self.log_std_max
            for name, value in (("log_std_min", low), ("log_std_max", high)):
                if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                    raise ValueError(f"posterior diagonal: {name} must be a finite number or None, got {value!r}")
            if low is not None and high is not None and not low < high:
                raise ValueError(f"posterior diagonal: log_std_min must be < log_std_max, got {low!r} and {high!r}")

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        k = phi.shape[1] // 2
        log_sig = phi[:, k:]  # [B, K]
        if self.options.log_std_min is not None or self.options.log_std_max is not None:
            log_sig = log_sig.clamp(self.options.log_std_min, self.options.log_std_max)
        return phi[:, :k], log_sig  # [B, K], [B, K]

    def __repr__(self) -> str:
        low, high = self.options.log_std_min, self.options.log_std_max
        bounds = "" if low is None and high is None else f"log_std_min={low}, log_std_max={high}"
        return f"{type(self).__name__}({bounds})"
