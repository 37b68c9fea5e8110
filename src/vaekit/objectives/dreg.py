"""The importance-weighted bound with doubly reparameterized gradients for the encoder (Tucker et al. 2019).

The value and the decoder's (and prior's) gradient are the IWAE's (Burda et al. 2016, eq. 8 and 14); the encoder's
gradient drops the score-function term of the IWAE gradient, replaced by its reparameterized equal (Tucker et al.
2019, Sec. 3, IWAE-DReG):

    grad_phi L_k = E_eps [ sum_i  w~_i^2  d log w_i / d z_i  dz_i / dphi ],   w~_i = w_i / sum_j w_j

where d log w_i / d z_i is taken with q's parameters held fixed: z keeps its dependence on phi (through every layer
of a hierarchical q), the density log q(z_i|x) does not. Its expectation is the IWAE gradient's; its variance is
lower, and unlike the IWAE encoder gradient's signal-to-noise ratio it does not vanish as k grows.

With warm-up (beta < 1 on log p(z) - log q(z|x)) the same derivation gives the weights w~_i ((1 - beta) + beta w~_i)
in place of w~_i^2 (the score term carries a factor beta); at beta = 1 it is the estimator above.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import OBJECTIVES, Terms, batch_mean, decode_log_px, on_model_device
from .iwae import IWAE

__all__ = ["DReG", "log_q_stopped"]


class _LogQ(nn.Module):
    """``model.log_q`` as a module's forward, so that ``functional_call`` can run it with other parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, phi: Tensor) -> Tensor:
        return self.model.log_q(z, phi)


def log_q_stopped(model: nn.Module, z: Tensor, phi: Tensor) -> Tensor:
    """log q(z|x) [B, k] with q's parameters stopped (the model's parameters and phi detached) but z's path kept:
    its gradient reaches the encoder only through z (for a hierarchical q, also through z_{l-1} in q(z_l|z_{l-1}))."""
    params = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    return functional_call(_LogQ(model), params, (z, phi.detach()))


@OBJECTIVES.register
class DReG(IWAE):
    """dreg: the importance-weighted bound with --iw-samples k, the encoder's gradient doubly reparameterized (Tucker et al. 2019)"""

    name = "dreg"  # the IWAE's options and value; only the encoder's gradient differs

    def __call__(
        self, model: Any, x: Tensor, *, beta: float = 1.0, calibrated: bool = False, eps: Tensor | None = None,
        batch_mean: Callable[[Tensor], Tensor] = batch_mean, dataset_size: int | None = None,
    ) -> Terms:
        """loss = -log 1/k sum_i w_i (the IWAE's value and decoder gradient), log w_i = log p(x|z_i) + beta (log p(z_i) -
        log q(z_i|x)); the gradient reaching z_i is scaled by (1 - beta) + beta w~_i, so that the encoder's is
        sum_i w~_i ((1 - beta) + beta w~_i) d log w_i/dz_i dz_i/dphi (Tucker et al. 2019, Sec. 3, at beta = 1)."""
        x, eps = on_model_device(model, x, eps)
        k = self.samples
        phi = model.encode(x).to(x.dtype)  # [B, P]
        z = model.rsample_z(phi, k, eps)  # [B, k, K]
        log_px, log_sig_x = decode_log_px(model, x, z, calibrated, batch_mean)  # [B, k], []
        log_pz = model.log_p_z(z)  # [B, k]; a learned prior's parameters (the VampPrior's) keep their own gradient
        log_qz = log_q_stopped(model, z, phi)  # [B, k]; no score-function term
        log_w = log_px + beta * (log_pz - log_qz)  # [B, k]
        bound = torch.logsumexp(log_w, dim=1) - math.log(k)  # [B]
        if z.requires_grad:
            w = torch.softmax(log_w.detach(), dim=1)  # [B, k] normalized weights w~_i
            scale = ((1.0 - beta) + beta * w)[..., None]  # [B, k, 1]
            z.register_hook(lambda g: g * scale.to(g.dtype))
        kl = (log_qz - log_pz).mean(dim=1)  # [B]
        rec = log_px.mean(dim=1)  # [B]
        return Terms(loss=-bound, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())
