"""The negative importance-weighted bound with k importance samples (Burda et al. 2016)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..registry import option
from . import OBJECTIVES, Objective, Terms, batch_mean, decode_log_px, on_model_device


@OBJECTIVES.register
class IWAE(Objective):
    """iwae: the importance-weighted bound with --iw-samples k (Burda et al. 2016)"""

    name = "iwae"
    samples_option = "iw_samples"

    @dataclass
    class Options:
        iw_samples: int = option(5, "importance samples per image per step (k)", min=1)

    def __call__(
        self, model: Any, x: Tensor, *, beta: float = 1.0, calibrated: bool = False, eps: Tensor | None = None,
        batch_mean: Callable[[Tensor], Tensor] = batch_mean, dataset_size: int | None = None,
    ) -> Terms:
        """loss = -log 1/k sum_i w_i,  log w_i = log p(x|z_i) + beta (log p(z_i) - log q(z_i|x)),  z_i ~ q(z|x)
        (Burda et al. 2016, eq. 8), through logsumexp.

        k = 1 is the ELBO with the KL estimated on the sample; the bound rises with k towards log p(x).
        ``beta`` < 1 (warm-up) weights the prior and entropy terms as in the ELBO. ``Terms.elbo`` is the
        mean of the k log weights at beta = 1 (an unbiased ELBO estimate).
        """
        x, eps = on_model_device(model, x, eps)
        k = self.samples
        phi = model.encode(x).to(x.dtype)  # [B, P]
        z = model.rsample_z(phi, k, eps)  # [B, k, K]
        log_px, log_sig_x = decode_log_px(model, x, z, calibrated, batch_mean)  # [B, k], []
        log_pz = model.log_p_z(z)  # [B, k]
        log_qz = model.log_q(z, phi)  # [B, k]
        log_w = log_px + beta * (log_pz - log_qz)  # [B, k]
        bound = torch.logsumexp(log_w, dim=1) - math.log(k)  # [B]
        kl = (log_qz - log_pz).mean(dim=1)  # [B]
        rec = log_px.mean(dim=1)  # [B]
        return Terms(loss=-bound, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())
