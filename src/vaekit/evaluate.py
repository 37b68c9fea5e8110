"""Evaluation: the test ELBO of a trained model, and the Monte-Carlo KL study.

Every number is per image, in nats, with its standard error over images. Evaluation
draws its samples of z from a forked RNG, so it neither depends on nor disturbs the
training stream.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .distributions import kl_q_p_exact, kl_q_p_mc, rsample
from .model import SimpleVAE

__all__ = ["evaluate_elbo", "kl_mc_error"]


@torch.no_grad()
def evaluate_elbo(
    model: SimpleVAE, images: Tensor, n_samples: int = 10, batch_size: int = 500, seed: int = 0
) -> dict[str, float]:
    """ELBO of ``images`` [M, 1, H, W] under ``model`` with its current sigma_x.

    Returns nats per image: ``elbo`` (higher is better) and its standard error
    ``elbo_se``, the reconstruction term ``rec`` = E_q log p(x|z), and ``kl``.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples} and {batch_size}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    devices = [param.device] if param.device.type == "cuda" else []
    elbo, rec, kl = [], [], []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(param.device, param.dtype)  # [b, 1, H, W]
            terms = model.elbo_terms(x, n_samples)
            elbo.append(-terms.loss.double())
            rec.append(terms.rec.double())
            kl.append(terms.kl.double())
    model.train(was_training)
    e = torch.cat(elbo)  # [M]
    se = e.std().item() / math.sqrt(e.numel()) if e.numel() > 1 else float("nan")
    return {
        "elbo": e.mean().item(),
        "elbo_se": se,
        "rec": torch.cat(rec).mean().item(),
        "kl": torch.cat(kl).mean().item(),
    }


def kl_mc_error(
    num_samples: list[int], repeats: int = 10, batch: int = 100, K: int = 2, seed: int = 0
) -> dict[str, list[float]]:
    """Absolute error of the Monte-Carlo KL against the exact one, per sample count.

    For ``batch`` random pairs (q, p) of K-dim isotropic Gaussians, each repeat draws
    N samples of q and takes the mean over pairs of |KL_mc - KL_exact| (nats). Returns
    the mean and standard deviation of that error over ``repeats`` repeats for each N.
    """
    g = torch.Generator().manual_seed(seed)
    params_q = torch.randn(batch, K + 1, generator=g, dtype=torch.float64) * 0.5  # [B, K+1]
    params_p = torch.randn(batch, K + 1, generator=g, dtype=torch.float64) * 0.5  # [B, K+1]
    exact = kl_q_p_exact(params_q, params_p)  # [B]
    mean, std = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for n in num_samples:
            errs = torch.stack(
                [(kl_q_p_mc(rsample(params_q, n), params_q, params_p) - exact).abs().mean() for _ in range(repeats)]
            )  # [repeats]
            mean.append(errs.mean().item())
            std.append(errs.std().item() if repeats > 1 else 0.0)
    return {"num_samples": list(num_samples), "mean": mean, "std": std}
