"""Images of a conditional VAE (``vaekit.conditions``): every condition a user picks from across rows with z shared
down each column (the class grid), completions of the given parts of test images next to the truth, and
``vaekit sample``'s images for one chosen condition (``--label 7``), as a PNG grid or a uint8 ``.npy`` array.

The model's condition is used through its own methods (``holding_vector``, ``choices``, ``shown``), so this module
needs neither the model's nor the conditions' modules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from .data.images import to_float
from .generated import save_npy, to_uint8
from .plots import image_grid, save_figure

__all__ = ["choice_grid", "draw_choice_grid", "draw_completions", "conditional_samples", "save_images", "QUANTIZATION"]

#: how ``save_images`` makes a .npy array of the mean images, in words
QUANTIZATION = "uint8 [N, C, H, W] = round(255 * clamp(mean image E[x|z, c], 0, 1))"
ROWS = 10  # test images whose given parts are choices (``Condition.choices``)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _z(model: Any, n: int, seed: int) -> Tensor:
    """n draws z ~ p(z) [n, K] from a torch RNG forked and seeded with ``seed`` (the global stream is left alone)."""
    device = _device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.sample_z(n)


@torch.no_grad()
def decode_with(model: Any, c: Tensor, z: Tensor) -> Tensor:
    """Mean images [B, n, C, H, W] (CPU) decoded from z [B, n, K] with conditions c [B, S], as the condition shows them."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with model.condition.holding_vector(c.to(p.device, p.dtype)):
            images = model.mean_image(z.to(p.device, p.dtype))  # [B, n, C, H, W]
            images = model.condition.shown(images.flatten(0, 1)).reshape(images.shape)
    finally:
        model.train(was_training)
    return images.float().cpu()


def choice_grid(model: Any, vectors: Tensor, cols: int, seed: int) -> Tensor:
    """Every condition c [R, S] across rows, the same ``cols`` draws z ~ N(0, I) down the columns: [R, cols, C, H, W]."""
    z = _z(model, cols, seed)  # [cols, K]
    return decode_with(model, vectors, z[None].expand(vectors.shape[0], cols, z.shape[1]))


def _choices(model: Any, images: Any, labels: Tensor | None) -> tuple[list[str], Tensor]:
    x = to_float(images[:ROWS])  # [<=10, C, H, W]
    return model.condition.choices(x, None if labels is None else labels[: len(x)])


def _draw_rows(rows: Tensor, path: Any, title: str, row_names: list[str], col_names: list[str] | None = None) -> None:
    """Rows of images [R, S, C, H, W] under ``title``, each row named on the left (and columns on top)."""
    r, s, _, h, w = rows.shape
    pad = 2
    grid = image_grid(rows.reshape(r * s, *rows.shape[2:]), nrow=s, pad=pad)
    fig = Figure(figsize=(1.0 + 0.55 * s, 0.8 + 0.55 * r))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(r)], row_names, fontsize=8)
    if col_names:
        ax.set_xticks([j * (w + pad) + w / 2 for j in range(s)], col_names, fontsize=7)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def draw_choice_grid(model: Any, images: Any, labels: Tensor | None, path: Any, seed: int, cols: int = 8) -> None:
    """Every choice of the condition (every class) across rows, ``cols`` draws of z shared down the columns."""
    names, vectors = _choices(model, images, labels)
    title = f"every {model.condition.choice_title} (rows) with the same z ~ N(0, I) down each column (seed {seed})"
    _draw_rows(choice_grid(model, vectors, cols, seed), path, title, names)


def draw_completions(model: Any, images: Any, labels: Tensor | None, path: Any, seed: int, samples: int = 6) -> None:
    """Test images' given parts | ``samples`` completions, z shared down each column | the truth."""
    names, vectors = _choices(model, images, labels)
    x = to_float(images[: len(names)])  # [R, C, H, W]
    given = model.condition.display(vectors, torch.full_like(x, 0.3))  # the missing part shown dim grey
    rows = torch.cat([given[:, None], choice_grid(model, vectors, samples, seed), x[:, None]], dim=1)  # [R, samples+2, ...]
    cols = ["given"] + [f"z{j}" for j in range(samples)] + ["truth"]
    _draw_rows(rows, path, f"completions of the missing part, z ~ N(0, I) shared down each column (seed {seed})", names, cols)


def conditional_samples(
    model: Any, images: Any, labels: Tensor | None, sampler: Any, n: int, seed: int, label: str | None,
) -> tuple[Tensor, int, str]:
    """``vaekit sample``'s images of a conditional model: (mean images [N, C, H, W], images per row, title).

    With ``label`` (a choice's name or number: a class): ``n`` images of that condition, z from ``sampler``.
    Without: every choice across rows, ``n // choices`` (at least 1) draws of z shared down the columns.
    ``images``, ``labels``: the test set (its first images are the quadrants' choices).
    """
    names, vectors = _choices(model, images, labels)
    if label is not None:
        i = model.condition.find(label, names)
        z = sampler.sample_z(model, n, seed)  # [n, K]
        out = decode_with(model, vectors[i : i + 1].expand(n, -1), z[:, None, :])[:, 0]  # [n, C, H, W]
        return out, max(1, math.ceil(math.sqrt(n))), f"{n} samples of {model.condition.choice_title} {names[i]} (seed {seed})"
    cols = max(1, n // len(names))
    z = sampler.sample_z(model, cols, seed)  # [cols, K]
    grid = decode_with(model, vectors, z[None].expand(len(names), cols, z.shape[1]))  # [R, cols, C, H, W]
    title = f"every {model.condition.choice_title} (rows: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}), z shared down each column (seed {seed})"
    return grid.flatten(0, 1), cols, title


def save_images(images: Tensor, path: str | Path, nrow: int, title: str) -> Path:
    """Mean images [N, C, H, W] as a grid (``.png``) or as ``QUANTIZATION`` (``.npy``), written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return save_npy(path, to_uint8(images))  # as vaekit.generated quantizes an unconditional model's images
    if suffix != ".png":
        raise ValueError(f"out (--out) must end in .png (a grid) or .npy (a uint8 array [N, C, H, W]), got {str(path)!r}")
    grid = image_grid(images, nrow=nrow)
    fig = Figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.4))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    save_figure(fig, path)
    return path
