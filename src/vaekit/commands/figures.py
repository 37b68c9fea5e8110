"""``vaekit figures``: a run's figures, drawn from its model, data and metrics.

elbo_curve.png, samples.png, reconstructions.png, latent_map.png, latent_scatter.png and
interpolations.png (see ``write_run_figures``); a figure the data cannot give is skipped with a
note, never the rest of the run's files.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import TrainConfig
from ..data import ImageData, to_float
from ..evaluation import seeded_rng
from ..latents import interpolate, latent_grid, pca, posterior_means, reconstruct
from ..model import VAE, generate_images
from ..plots import plot_elbo_curve, plot_interpolations, plot_latent_map, plot_latent_scatter, plot_reconstructions, plot_samples
from ..runfolder import RunFolder, split_images
from .report import report_run

__all__ = ["write_run_figures", "write_figures_and_report", "figures_run", "draw_samples", "InterimFigures", "FigureSkipped"]


def figures_run(run_dir: str | Path, device: str = "cpu") -> list[Path]:
    """(Re)draw a finished run's figures and report from its files; returns the paths written."""
    run = RunFolder(run_dir)
    model = run.load_model(device)
    rows = [r for r in run.metrics() if "steps" in r and "train_elbo" in r]  # the curve's points
    written, _ = write_figures_and_report(
        model, run.load_data(), run.train_config(), run.path, rows, run.batch_elbos(), global_batch=run.global_batch(),
    )
    return written


def write_figures_and_report(
    model: VAE, data: ImageData, train_cfg: TrainConfig, out: Path, rows: list[dict[str, Any]], batch_elbos: list[float] | None,
    global_batch: int | None = None,
) -> tuple[list[Path], dict[str, float]]:
    """``write_run_figures``, then the report with the notes of the figures skipped; returns the paths written and
    the seconds each took ({"figures": s, "report": s})."""
    notes: list[str] = []
    t0 = time.perf_counter()
    written = write_run_figures(model, data, train_cfg, out, rows, batch_elbos, global_batch=global_batch, notes=notes)
    t1 = time.perf_counter()
    written.append(report_run(out, model=model, data=data, notes=notes))
    return written, {"figures": t1 - t0, "report": time.perf_counter() - t1}


class InterimFigures:
    """After every epoch but the last, samples.png and report.html with what there is so far, so that a
    newcomer has something to open within the first minutes (the last epoch's are drawn with the rest)."""

    def __init__(self, run: RunFolder, model: Any, data: ImageData, seed: int, rows: list[dict[str, Any]]):
        self.run, self.model, self.data, self.seed, self.rows = run, model, data, seed, rows

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        if stats.get("final", True):
            return
        notes: list[str] = []
        self.run.write_metrics(self.rows)  # the report reads them (the epoch's checkpoint writes them again)
        draw_samples(self.model, self.seed, self.run / "samples.png", notes, self.run.images(self.data, "test"), self.data.test_labels)
        report_run(self.run.path, model=self.model, data=self.data, notes=notes)



def write_run_figures(
    model: VAE, data: ImageData, train_cfg: TrainConfig, out: Path, rows: list[dict[str, Any]], batch_elbos: list[float] | None,
    global_batch: int | None = None, *, notes: list[str] | None = None,
) -> list[Path]:
    """Draw a run's figures into ``out``; returns their paths.

    elbo_curve.png (per-step train ELBO, per-epoch train and test; skipped without a
    history), samples.png (64 draws from the prior), reconstructions.png (16 test images,
    or all of a smaller test set, and their reconstructions), latent_map.png (decoded grid:
    the prior's quantiles for K=2, the two principal directions of the test posterior means
    for K>2, which needs 3 test images), latent_scatter.png (test posterior means coloured
    by label, PCA for K>2) and interpolations.png (8 pairs of test images, or as many as a
    smaller test set has, 10 steps). Deterministic given the seed.
    ``global_batch``: images per optimizer step (batch_size x processes; default batch_size).

    A figure that cannot be drawn (too few test images, or an error) is skipped, never the
    rest: one line on stderr names it and says why, the same line is appended to ``notes``
    (for the report), and an older file of its name is removed, so that no figure of
    another run is left in its place.
    """
    test = split_images(data, train_cfg, "test")
    labels = data.test_labels  # [M]: a conditional model sees each image's condition (vaekit.conditions)
    cond = getattr(model, "condition", None)
    m = len(test)  # test images
    written: list[Path] = []
    notes = [] if notes is None else notes
    cache: dict[str, Tensor] = {}

    def draw(name: str, fn: Callable[[Path], None]) -> None:
        if _draw_figure(out / name, fn, notes):
            written.append(out / name)

    def means() -> Tensor:  # [M, K] the test set's posterior means, computed once
        if "means" not in cache:
            cache["means"] = posterior_means(model, test, labels=labels)
        return cache["means"]

    if batch_elbos:
        steps_per_epoch = math.ceil(len(data.train_uint8) / (global_batch or train_cfg.batch_size))
        draw("elbo_curve.png", lambda p: plot_elbo_curve(batch_elbos, p, rows, steps_per_epoch))
    if draw_samples(model, train_cfg.seed, out / "samples.png", notes, test, labels):
        written.append(out / "samples.png")
    order = torch.randperm(m, generator=torch.Generator().manual_seed(train_cfg.seed))  # [M] which test images to show
    if cond is not None:  # the condition's own figure (every class across rows; completions)
        draw(cond.figure_file, lambda p: cond.draw_figure(model, test, labels, p, train_cfg.seed))
    shown = order[: min(16, m)]  # [S] up to 16 test images
    draw("reconstructions.png", lambda p: plot_reconstructions(to_float(test[shown]), reconstruct(model, test[shown], labels[shown]), p))
    draw("latent_map.png", lambda p: _draw_latent_map(model, means, m, p, test, labels))
    draw("latent_scatter.png", lambda p: _draw_latent_scatter(means(), data, p))
    draw("interpolations.png", lambda p: _draw_interpolations(model, test, order, p, labels))
    return written


def draw_samples(model: VAE, seed: int, path: Path, notes: list[str], test: Any = None, labels: Tensor | None = None) -> bool:
    """samples.png: 64 images decoded from z ~ p(z), the same for the same seed (a conditional model's, each with the
    condition of one of the first ``test`` images and their ``labels``); a note instead if it fails."""
    device = next(model.parameters()).device
    with seeded_rng(seed, device):
        if getattr(model, "condition", None) is None:
            return _draw_figure(path, lambda p: plot_samples(generate_images(model, n_images=64), p), notes)
        if test is None or labels is None:
            raise ValueError("draw_samples: a conditional model's samples need the test images and labels whose conditions they take")
        return _draw_figure(path, lambda p: _draw_conditional_samples(model, test, labels, p), notes)


@contextlib.contextmanager
def _conditioned(model: VAE, x: Tensor, labels: Tensor, n: int | None = None):
    """Hold the condition of images x [B, ...] (labels [B]; with ``n``, of the first image for n images) for a conditional
    model's networks, yielding how it shows decoded images (``Condition.shown``); for an unconditional model, nothing."""
    cond = getattr(model, "condition", None)
    if cond is None:
        yield lambda images: images
        return
    if n is not None:
        x, labels = x[:1].expand(n, *x.shape[1:]), labels[:1].expand(n)
    with cond.holding(x, labels):
        yield cond.shown


class FigureSkipped(Exception):
    """A figure that the data cannot give (the message says why); ``write_run_figures`` notes it and goes on."""


def _draw_figure(path: Path, fn: Callable[[Path], None], notes: list[str]) -> bool:
    """``fn(path)``; on any error (VAEKIT_DEBUG set: re-raised) one note on stderr and in ``notes``, and no file at ``path``."""
    try:
        fn(path)
        return True
    except Exception as e:
        if os.environ.get("VAEKIT_DEBUG") and not isinstance(e, FigureSkipped):
            raise
        why = str(e) if isinstance(e, FigureSkipped) else f"{type(e).__name__}: {e}"
        note = f"{path.name} skipped: {why}"
        notes.append(note)
        print(f"vaekit: note: {note}", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)  # not an older run's figure in its place
        return False


def _draw_conditional_samples(model: VAE, test: Any, labels: Tensor, path: Path) -> None:
    """samples.png of a conditional model: z ~ N(0, I), each decoded with the condition of one of the first 64 test images."""
    n = min(64, len(test))
    with _conditioned(model, to_float(test[:n]), labels[:n]) as shown:
        images = shown(generate_images(model, n_images=n))
    plot_samples(images, path, title=f"samples z ~ N(0, I), each with the condition of one of the first {n} test images")


def _draw_latent_map(model: VAE, means: Callable[[], Tensor], m: int, path: Path, test: Any, labels: Tensor) -> None:
    if model.K != 2 and m < 3:
        raise FigureSkipped(
            f"for K={model.K} the map spans the two principal directions of the test posterior means, which needs "
            f"at least 3 test images; the test set has {m}"
        )
    with _conditioned(model, to_float(test[:1]), labels[:1], n=15 * 15) as shown:  # a conditional model: test image 0's
        grid, what = latent_grid(model, n=15, means=None if model.K == 2 else means())
        grid = shown(grid)
    if getattr(model, "condition", None) is not None:
        what += ", all with the condition of the first test image"
    plot_latent_map(grid, path, what)


def _draw_latent_scatter(means: Tensor, data: ImageData, path: Path) -> None:
    """The test posterior means [M, K] in 2-D: as they are for K=2, else their PCA projection."""
    M, K = means.shape
    images = f"{M} test image{'s' * (M != 1)}"
    if K == 2:
        points, axes, title = means, ("E[z_0|x]", "E[z_1|x]"), f"posterior means of the {images}"
    else:
        center, dirs, _ = pca(means, 2)
        points = (means - center) @ dirs.T  # [M, 2]
        axes, title = ("PC 1", "PC 2"), f"posterior means of the {images} (PCA of K={K})"
    labels = data.test_labels if data.info.labelled else None  # no labels: one colour
    plot_latent_scatter(points, labels, path, axes, title)


def _draw_interpolations(model: VAE, test: Any, order: Tensor, path: Path, labels: Tensor) -> None:
    """8 pairs of test images not among the reconstructions (order[16:32]); from a smaller test set, as many
    disjoint pairs as it has (up to 8)."""
    m = len(order)
    if m < 2:
        raise FigureSkipped(f"an interpolation needs a pair of test images; the test set has {m}")
    p = 8 if m >= 32 else min(8, m // 2)  # pairs
    pairs = (order[16:32] if m >= 32 else order[: 2 * p]).reshape(2, p)  # [2, P]
    a, b = pairs
    plot_interpolations(interpolate(model, test[a], test[b], steps=10, labels_a=labels[a], labels_b=labels[b]), path)


