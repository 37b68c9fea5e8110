"""Looking inside a trained VAE: reconstructions, the latent map, latent PCA, interpolations.

Pure functions from a model and images to tensors; ``plots.py`` draws them. Every
function runs without gradients, in eval mode, on the model's device, and returns CPU
tensors. A conditional model (``vaekit.conditions``) is given each image's condition, from the
image and its label (``labels``); ``latent_grid`` decodes with the condition its caller holds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .conditioning import given
from .data import to_float
from .model import VAE, eval_mode, param_device

__all__ = ["posterior_means", "reconstruct", "pca", "latent_grid", "interpolate"]


@torch.no_grad()
def posterior_means(model: VAE, images: Tensor, batch_size: int = 1000, labels: Tensor | None = None) -> Tensor:
    """E_q[z|x] for ``images`` [M, C, H, W] (and their ``labels`` [M]: E_q[z|x, c] of a conditional model) -> [M, K] (CPU, float32).

    A model with several stochastic layers gives its top layer's (``top_posterior``, the mean path): the latent
    space of the figures, the explorer and the samplers."""
    device, dtype = param_device(model)
    top = getattr(model, "top_posterior", None)
    means = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size]).to(device, dtype)  # [b, C, H, W]
            with given(model, x, None if labels is None else labels[start : start + batch_size]):
                mu = top(x)[0] if top is not None else model.posterior.split(model.encode(x))[0]  # [b, K]
            means.append(mu.float().cpu())
    return torch.cat(means)  # [M, K]


@torch.no_grad()
def reconstruct(model: VAE, images: Tensor, labels: Tensor | None = None) -> Tensor:
    """Mean reconstructions decoded from the posterior means: [M, C, H, W] -> [M, C, H, W] (CPU); a conditional
    model's given each image's condition (the quadrants show the given part as it is)."""
    device, dtype = param_device(model)
    z = posterior_means(model, images, labels=labels).to(device, dtype)  # [M, K]
    x = to_float(images).to(device, dtype)
    with eval_mode(model), given(model, x, labels):
        recon = _shown(model, model.mean_image(z[:, None, :])[:, 0])  # [M, C, H, W]
    return recon.float().cpu()


def _shown(model: VAE, images: Tensor) -> Tensor:
    """Decoded images [B, C, H, W] as a conditional model shows them, with the condition held (``Condition.shown``)."""
    condition = getattr(model, "condition", None)
    return images if condition is None else condition.shown(images)


def pca(points: Tensor, n: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Principal directions of ``points`` [M, K]: (center [K], directions [n, K], std along each [n]).

    Directions are unit vectors sorted by decreasing variance, each signed so that its
    largest component is positive (a deterministic orientation). With K < n, the missing
    directions are zero with zero spread.
    """
    x = points.double()
    center = x.mean(dim=0)  # [K]
    cov = (x - center).T @ (x - center) / max(1, x.shape[0] - 1)  # [K, K]
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True)[:n]
    dirs = evecs[:, order].T  # [n', K]
    signs = torch.sign(dirs.gather(1, dirs.abs().argmax(dim=1, keepdim=True)))  # [n', 1]
    dirs = dirs * torch.where(signs == 0, torch.ones_like(signs), signs)
    std = evals[order].clamp_min(0).sqrt()  # [n']
    if dirs.shape[0] < n:
        dirs = torch.cat([dirs, torch.zeros(n - dirs.shape[0], x.shape[1], dtype=x.dtype)])
        std = torch.cat([std, torch.zeros(n - std.shape[0], dtype=x.dtype)])
    return center.float(), dirs.float(), std.float()


@torch.no_grad()
def latent_grid(model: VAE, n: int = 15, means: Tensor | None = None, span: float = 2.0) -> tuple[Tensor, str]:
    """Decode an n x n grid of latent points: images [n*n, C, H, W] (row-major, top row first) and a description.

    For K = 2 the grid covers the prior's quantiles 0.5/n ... 1 - 0.5/n in each dimension
    (the "digit manifold": equal prior mass per cell). For K > 2 it spans +-``span``
    standard deviations along the two principal directions of ``means`` (the posterior
    means of a dataset, [M, K]), around their mean.
    """
    device, dtype = param_device(model)
    K = model.K
    if K == 2 or means is None:
        if K != 2:
            raise ValueError(f"a latent map of a K={K} model needs the posterior means of a dataset (means=[M, {K}])")
        q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)  # [n] prior quantiles
        zx, zy = q, q.flip(0)  # top row = largest z_2
        grid = torch.stack(torch.meshgrid(zy, zx, indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # [n*n, 2]
        what = f"z on the prior's quantiles {0.5 / n:.3g}..{1 - 0.5 / n:.3g} in each dimension"
    else:
        center, dirs, std = pca(means, 2)  # [K], [2, K], [2]
        a = torch.linspace(-span, span, n, dtype=torch.float64)  # [n]
        u, v = torch.meshgrid(a.flip(0), a, indexing="ij")  # [n, n] rows: PC2 decreasing, cols: PC1
        grid = (
            center.double()
            + u.reshape(-1, 1) * std[1].double() * dirs[1].double()
            + v.reshape(-1, 1) * std[0].double() * dirs[0].double()
        )  # [n*n, K]
        what = f"z on +-{span:g} std along the two principal directions of the test-set posterior means"
    with eval_mode(model):
        images = model.mean_image(grid.to(device, dtype)[:, None, :])[:, 0]  # [n*n, C, H, W]
    return images.float().cpu(), what


@torch.no_grad()
def interpolate(
    model: VAE, a: Tensor, b: Tensor, steps: int = 10, labels_a: Tensor | None = None, labels_b: Tensor | None = None,
) -> Tensor:
    """Decode straight lines between the posterior means of image pairs.

    ``a``, ``b``: images [P, C, H, W]. Returns [P, steps, C, H, W]: for each pair, the
    images decoded from (1 - t) mu(a) + t mu(b), t = 0 ... 1. A conditional model encodes each
    image with its condition (``labels_a``, ``labels_b`` [P]) and decodes the line with a's.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    device, dtype = param_device(model)
    za = posterior_means(model, a, labels=labels_a).to(device, dtype)  # [P, K]
    zb = posterior_means(model, b, labels=labels_b).to(device, dtype)  # [P, K]
    t = torch.linspace(0, 1, steps, device=device, dtype=dtype)[None, :, None]  # [1, T, 1]
    z = (1 - t) * za[:, None, :] + t * zb[:, None, :]  # [P, T, K]
    xa = to_float(a).to(device, dtype)  # [P, C, H, W]
    with eval_mode(model), given(model, xa, labels_a):
        images = model.mean_image(z)  # [P, T, C, H, W]
        images = _shown(model, images.flatten(0, 1)).reshape(images.shape)
    return images.float().cpu()
