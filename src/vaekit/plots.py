"""Figures (PNG) that explain a VAE: ELBO curve, sample grids, KL error, rsample histograms,
reconstructions, the latent map, the latent scatter and interpolations.

Uses matplotlib's object-oriented API with the Agg canvas, so importing vaekit never
touches the global pyplot backend, and writes every PNG atomically.
"""

from __future__ import annotations

import io
import math
import os
from typing import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from .checkpoint import atomic_write_bytes

__all__ = [
    "save_figure", "image_grid", "plot_samples", "plot_elbo_curve", "plot_kl_error", "plot_rsample_hist",
    "plot_reconstructions", "plot_latent_map", "plot_latent_scatter", "plot_interpolations",
]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Render ``fig`` to PNG and write it atomically to ``path``."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images [X, C, H, W] (C = 1 grey or 3 RGB) into one array clipped to [0, 1]:
    [rows*(H+pad)-pad, cols*(W+pad)-pad] for grey, with a trailing [..., 3] for colour."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [X, C, H, W] with C = 1 or 3, got {list(images.shape)}")
    x = images.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()  # [X, H, W, C]
    n, h, w, c = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = x[i]
    return grid[..., 0] if c == 1 else grid


def _save_grid(
    grid: np.ndarray, path: str | os.PathLike, title: str, figsize: tuple[float, float], fontsize: float | None = None
) -> None:
    """Draw a tiled image array (grey levels [H, W] or RGB [H, W, 3] in [0, 1], no axes) under ``title`` as PNG."""
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, **({} if fontsize is None else {"fontsize": fontsize}))  # default: axes.titlesize
    save_figure(fig, path)


def plot_samples(images: Tensor, path: str | os.PathLike, title: str = "samples from the prior") -> None:
    """A grid of images [X, C, H, W] (grey or RGB)."""
    grid = image_grid(images)
    _save_grid(grid, path, title, (6, 6 * grid.shape[0] / grid.shape[1] + 0.4))


def plot_elbo_curve(
    batch_elbos: Sequence[float],
    path: str | os.PathLike,
    epochs: Sequence[dict] = (),
    steps_per_epoch: int | None = None,
) -> None:
    """Per-batch training ELBO (and its moving average), with per-epoch train/test ELBO if given."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    y = np.asarray(batch_elbos, dtype=np.float64)
    scale = 1.0 / steps_per_epoch if steps_per_epoch else 1.0
    x = (np.arange(len(y)) + 1) * scale
    ax.plot(x, y, color="tab:blue", alpha=0.25, lw=0.8, label="train, per batch")
    if len(y) >= 20:
        k = max(5, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1 :], smooth, color="tab:blue", lw=1.6, label=f"train, moving average of {k}")
    if epochs:
        ex = [e["steps"] * scale for e in epochs]
        ax.plot(ex, [e["train_elbo"] for e in epochs], "o", color="tab:blue", label="train, epoch mean")
        if all("test_elbo" in e for e in epochs):
            ax.plot(ex, [e["test_elbo"] for e in epochs], "s-", color="tab:orange", label="test, epoch end")
    if len(y):  # keep the first noisy steps from flattening the curve
        ax.set_ylim(np.percentile(y, 2) - 20, max(y.max(), *(e.get("test_elbo", -np.inf) for e in epochs)) + 20)
    ax.set_xlabel("epoch" if steps_per_epoch else "step")
    ax.set_ylabel("ELBO (nats per image, higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def plot_kl_error(curve: dict[str, list[float]], path: str | os.PathLike) -> None:
    """|KL_mc - KL_exact| against the number of samples, with error bars, log-log."""
    n = np.asarray(curve["num_samples"], dtype=np.float64)
    mean = np.asarray(curve["mean"])
    std = np.asarray(curve["std"])
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    lower = np.minimum(std, mean * 0.999)  # keep the bars above zero on a log axis
    ax.errorbar(n, mean, yerr=[lower, std], fmt="o-", capsize=3, label="mean |KL_mc - KL_exact| (10 repeats)")
    ref = mean[0] * np.sqrt(n[0] / n)
    ax.plot(n, ref, "--", color="grey", label=r"$\propto 1/\sqrt{N}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of samples N")
    ax.set_ylabel("absolute error (nats)")
    ax.set_title("Monte-Carlo KL against the exact KL")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save_figure(fig, path)


def plot_rsample_hist(samples: Tensor, mu: Sequence[float], sigma: float, path: str | os.PathLike) -> None:
    """Histograms of rsample's samples [M, K] per dimension, against the exact N(mu_k, sigma^2) density."""
    s = samples.detach().double().cpu().numpy()
    k = s.shape[1]
    fig = Figure(figsize=(4.2 * k, 3.6))
    for j in range(k):
        ax = fig.add_subplot(1, k, j + 1)
        ax.hist(s[:, j], bins=60, density=True, alpha=0.6, label=f"rsample, {len(s)} draws")
        grid = np.linspace(mu[j] - 4 * sigma, mu[j] + 4 * sigma, 400)
        pdf = np.exp(-0.5 * ((grid - mu[j]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        ax.plot(grid, pdf, color="black", lw=1.5, label=f"N({mu[j]:g}, {sigma:g}$^2$)")
        ax.set_title(f"z[{j}]")
        ax.legend(fontsize=8)
    save_figure(fig, path)



def plot_reconstructions(images: Tensor, recon: Tensor, path: str | os.PathLike, cols: int = 8) -> None:
    """Images [M, C, H, W] above their reconstructions [M, C, H, W], in pairs of rows."""
    if images.shape != recon.shape:
        raise ValueError(f"images {list(images.shape)} and recon {list(recon.shape)} must have the same shape")
    m = images.shape[0]
    rows = []
    for start in range(0, m, cols):
        block = slice(start, min(start + cols, m))
        rows += [images[block], recon[block]]
        if rows[-1].shape[0] < cols:  # pad the last pair of rows with blank images
            pad = images.new_ones(cols - rows[-1].shape[0], *images.shape[1:])
            rows[-2], rows[-1] = torch.cat([rows[-2], pad]), torch.cat([rows[-1], pad])
    grid = image_grid(torch.cat(rows), nrow=cols)
    title = "test images (odd rows) and their reconstructions from E[z|x] (even rows)"
    _save_grid(grid, path, title, (6, 6 * grid.shape[0] / grid.shape[1] + 0.5), fontsize=9)


def plot_latent_map(images: Tensor, path: str | os.PathLike, what: str) -> None:
    """An n x n grid of decoded images [n*n, C, H, W] (row-major), titled with how z was chosen."""
    n = int(round(math.sqrt(images.shape[0])))
    grid = image_grid(images, nrow=n, pad=0)
    _save_grid(grid, path, f"latent map: decoded means for\n{what}", (6.5, 6.8), fontsize=9)


def plot_latent_scatter(
    points: Tensor, labels: Tensor | None, path: str | os.PathLike, axes: tuple[str, str] = ("z[0]", "z[1]"), title: str = ""
) -> None:
    """Points [M, 2] (posterior means, or their PCA projection) coloured by integer label, with a legend."""
    p = points.detach().double().cpu().numpy()
    fig = Figure(figsize=(6.5, 5.6))
    ax = fig.add_subplot()
    if labels is None or bool((labels < 0).all()):  # no labels: one colour
        ax.scatter(p[:, 0], p[:, 1], s=3, alpha=0.5)
    else:
        lab = labels.cpu().numpy()
        cmap = matplotlib.colormaps["tab10"]
        for j, value in enumerate(np.unique(lab)):
            sel = lab == value
            ax.scatter(p[sel, 0], p[sel, 1], s=3, alpha=0.6, color=cmap(j % 10), label=str(value))
        ax.legend(title="label", markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title or "test-set posterior means", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_interpolations(strips: Tensor, path: str | os.PathLike) -> None:
    """Rows of images [P, T, C, H, W]: each row decodes a straight line in latent space between two test images."""
    p, t = strips.shape[:2]
    grid = image_grid(strips.reshape(p * t, *strips.shape[2:]), nrow=t)
    title = "interpolation between the posterior means of test-image pairs (left to right)"
    _save_grid(grid, path, title, (7, 7 * grid.shape[0] / grid.shape[1] + 0.5), fontsize=9)
