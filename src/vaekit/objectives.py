"""Training objectives: pure functions of (model, images) -> per-image terms, in nats.

An objective takes the network and a batch, like improved-diffusion's
``training_losses(model, x, t)``, and returns per-image ``Terms``; the trainer reduces
them once. ``Terms.loss`` is what training minimizes; ``Terms.elbo`` is always the true
evidence lower bound (at beta = 1), so metrics stay comparable whatever is trained.

A new objective is one function here plus its entry in ``OBJECTIVES``. The model is any
``vaekit.VAE``: ``encode(x) -> phi``, ``posterior``, ``decode(z) -> [B, N, C, H, W]``,
``likelihood`` and ``log_sig_x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from .distributions import log_prob_diag

__all__ = ["Terms", "elbo", "iwae", "OBJECTIVES", "Objective"]


class Terms(NamedTuple):
    """Per-image terms of an objective, in nats (B images)."""

    loss: Tensor  # [B] what training minimizes
    elbo: Tensor  # [B] the ELBO at beta = 1: E_q log p(x|z) - KL(q || p)
    rec: Tensor  # [B] E_q log p(x|z), the mean over the samples of z
    kl: Tensor  # [B] KL(q(z|x) || N(0, I)): exact (elbo) or its estimate on the samples (iwae)
    log_sig_x: Tensor  # [] the decoder log std used (calibrated or learned; unused without a scale)


def _mean(t: Tensor) -> Tensor:
    return t.mean()


def _on_model_device(model: Any, x: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """x and eps moved to the model's device (a no-op in training, where they are there already)."""
    device = model.log_sig_x.device
    return x.to(device), None if eps is None else eps.to(device)


def _decode_log_px(
    model: Any, x: Tensor, z: Tensor, calibrated: bool, batch_mean: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """log p(x|z_i) [B, N] for images x [B, C, H, W] and latents z [B, N, K], and the log_sig_x used."""
    b, n = z.shape[:2]
    out = model.decode(z)  # [B, N, C, H, W]
    x_flat = x.flatten(1).unsqueeze(1).expand(b, n, -1)  # [B, N, D] (B may be 0: an empty shard)
    out_flat = out.flatten(2).to(x.dtype)  # [B, N, D]
    log_sig_x = None
    if calibrated:
        log_sig_x = model.likelihood.calibrated_log_sig_x(x_flat, out_flat, batch_mean)
    if log_sig_x is None:
        log_sig_x = model.log_sig_x
    return model.likelihood.log_prob(x_flat, out_flat, log_sig_x), log_sig_x  # [B, N], []


def elbo(
    model: Any,
    x: Tensor,
    *,
    samples: int = 1,
    beta: float = 1.0,
    calibrated: bool = False,
    eps: Tensor | None = None,
    batch_mean: Callable[[Tensor], Tensor] = _mean,
) -> Terms:
    """The negative ELBO with N = ``samples`` samples of z and the KL in closed form; with ``beta``, the
    beta-VAE loss (Higgins et al. 2017):

        loss = -1/N sum_i log p(x | z_i) + beta KL(q(z|x) || N(0, I)),  z_i ~ q(z|x)   (Kingma & Welling 2014, eq. 7)

    Args:
        model: a ``vaekit.VAE``.
        x: images [B, C, H, W].
        samples: N >= 1.
        beta: weight of the KL (1: the ELBO; warm-up passes a beta rising from 0).
        calibrated: set the Gaussian decoder's log sigma_x to this batch's optimum 0.5 log MSE
            (Rybkin et al. 2021) instead of the learned one; ignored by likelihoods without a scale.
        eps: [N, B, K] standard-normal noise to use (data-parallel ranks pass their slice of the
            global draw); None draws it from the global RNG.
        batch_mean: how the calibrated MSE is averaged (data-parallel: over the global batch).

    x and eps follow the model's device; the terms are on that device.
    """
    x, eps = _on_model_device(model, x, eps)
    # under autocast the networks may run in bf16; the objective is computed in x's dtype
    phi = model.encode(x).to(x.dtype)  # [B, P]
    z = model.posterior.rsample(phi, samples, eps)  # [B, N, K]
    kl = model.posterior.kl(phi)  # [B]
    log_px, log_sig_x = _decode_log_px(model, x, z, calibrated, batch_mean)  # [B, N], []
    rec = log_px.mean(dim=1)  # [B]
    return Terms(loss=beta * kl - rec, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())


def iwae(
    model: Any,
    x: Tensor,
    *,
    samples: int = 1,
    beta: float = 1.0,
    calibrated: bool = False,
    eps: Tensor | None = None,
    batch_mean: Callable[[Tensor], Tensor] = _mean,
) -> Terms:
    """The negative importance-weighted bound with k = ``samples`` importance samples (Burda et al. 2016, eq. 8):

        loss = -log 1/k sum_i w_i,  log w_i = log p(x|z_i) + beta (log p(z_i) - log q(z_i|x)),  z_i ~ q(z|x)

    through logsumexp. k = 1 is the ELBO with the KL estimated on the sample; the bound rises with
    k towards log p(x). ``beta`` < 1 (warm-up) weights the prior and entropy terms as in the ELBO.
    ``Terms.elbo`` is the mean of the k log weights at beta = 1 (an unbiased ELBO estimate).
    Other arguments as in ``elbo``; x and eps follow the model's device.
    """
    x, eps = _on_model_device(model, x, eps)
    phi = model.encode(x).to(x.dtype)  # [B, P]
    z = model.posterior.rsample(phi, samples, eps)  # [B, k, K]
    log_px, log_sig_x = _decode_log_px(model, x, z, calibrated, batch_mean)  # [B, k], []
    log_pz = log_prob_diag(z, torch.zeros_like(z), torch.zeros_like(z[..., :1]))  # [B, k] log N(z; 0, I)
    log_qz = model.posterior.log_prob(z, phi)  # [B, k]
    log_w = log_px + beta * (log_pz - log_qz)  # [B, k]
    bound = torch.logsumexp(log_w, dim=1) - math.log(samples)  # [B]
    kl = (log_qz - log_pz).mean(dim=1)  # [B]
    rec = log_px.mean(dim=1)  # [B]
    return Terms(loss=-bound, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())


@dataclass(frozen=True)
class Objective:
    """A registered objective: the function and the TrainConfig field giving its number of samples of z."""

    fn: Callable[..., Terms]
    samples_field: str  # "samples" (N) or "iw_samples" (k)

    def __call__(self, *args: Any, **kwargs: Any) -> Terms:
        return self.fn(*args, **kwargs)


OBJECTIVES: dict[str, Objective] = {
    "elbo": Objective(elbo, samples_field="samples"),
    "iwae": Objective(iwae, samples_field="iw_samples"),
}
