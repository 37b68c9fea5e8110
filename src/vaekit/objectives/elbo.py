"""The negative ELBO with N samples of z, the KL in closed form where there is one (Kingma & Welling 2014);
with beta, the beta-VAE loss (Higgins et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from ..registry import option
from . import OBJECTIVES, Objective, Terms, batch_mean, decode_log_px, on_model_device


@OBJECTIVES.register
class ELBO(Objective):
    """elbo: the ELBO with --samples N samples of z (--beta for a beta-VAE)"""

    name = "elbo"
    samples_option = "samples"
    trains_elbo = True

    @dataclass
    class Options:
        samples: int = option(1, "samples of z per image per step (N)", min=1)

    def __call__(
        self, model: Any, x: Tensor, *, beta: float = 1.0, calibrated: bool = False, eps: Tensor | None = None,
        batch_mean: Callable[[Tensor], Tensor] = batch_mean, dataset_size: int | None = None,
    ) -> Terms:
        """loss = -1/N sum_i log p(x | z_i) + beta KL(q(z|x) || p(z)),  z_i ~ q(z|x)   (Kingma & Welling 2014, eq. 7)

        The KL is in closed form where the prior gives one (N(0, I)), else its estimate on the same
        samples, 1/N sum_i log q(z_i|x) - log p(z_i).
        """
        x, eps = on_model_device(model, x, eps)
        # under autocast the networks may run in bf16; the objective is computed in x's dtype
        phi = model.encode(x).to(x.dtype)  # [B, P]
        z = model.rsample_z(phi, self.samples, eps)  # [B, N, K]
        kl = model.kl(phi)  # [B] or None
        log_px, log_sig_x = decode_log_px(model, x, z, calibrated, batch_mean)  # [B, N], []
        if kl is None:
            kl = (model.log_q(z, phi) - model.log_p_z(z)).mean(dim=1)  # [B]
        rec = log_px.mean(dim=1)  # [B]
        return Terms(loss=beta * kl - rec, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())

    def describe(self) -> str:
        return self.name
