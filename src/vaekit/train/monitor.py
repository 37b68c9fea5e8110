"""The per-epoch monitor: the test ELBO at every epoch's end and the run's row of metrics for it; and
TensorBoard, which logs those rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..evaluation import evaluate_elbo, seeded_rng
from ..model import generate_images
from ..objectives import make_objective
from ..plots import image_grid
from .callbacks import Callback

__all__ = ["Monitor", "TensorBoard", "monitor_subset", "objective_name", "MONITOR_SEED", "TENSORBOARD_SCALARS"]

MONITOR_SEED = 20_261_125  # the fixed draw of the monitor's test images


def monitor_subset(images: torch.Tensor, n: int | None) -> torch.Tensor:
    """The per-epoch monitor's ``n`` test images: a fixed random subset (the same in every run), in order; all if n is None.

    Random, not the first n: MNIST's test set is ordered by writer population, and its first
    5,000 images score about 20 nats differently from the whole set.
    """
    if n is None or n >= len(images):
        return images
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(MONITOR_SEED))[:n].sort().values  # [n]
    return images[pick]


def objective_name(train_cfg: Any) -> str:
    """How the training objective is named in metrics: e.g. "elbo", "elbo(beta=4)", "iwae(k=50)"."""
    name = make_objective(train_cfg.objective, train_cfg.PARTS["objective"].pick_options(train_cfg.objective, train_cfg.options)).describe()
    if train_cfg.beta != 1.0 or train_cfg.kl_warmup > 0:
        warm = f", warm-up {train_cfg.kl_warmup} steps" if train_cfg.kl_warmup > 0 else ""
        name += f" with beta={train_cfg.beta:g}{warm}"
    return name


class Monitor(Callback):
    """At every epoch's end, the test ELBO of ``model`` on ``test_images`` and the epoch's row of metrics,
    appended to ``rows`` (what metrics.jsonl and the checkpoint hold).

    Before the last epoch a cheaper estimate (``cfg.monitor_images``, a fixed subset, and
    ``cfg.monitor_samples`` samples of z); the last row is the full evaluation (``cfg.eval_samples``).
    A data-parallel run evaluates on every process, each its share (``sharded``). A conditional model is
    measured given each test image's condition (``test_labels`` [M]).
    """

    def __init__(self, model: Any, cfg: Any, test_images: Any, rows: list[dict[str, Any]], test_labels: Any = None):
        self.model, self.cfg, self.test_images, self.rows = model, cfg, test_images, rows
        self.test_labels = test_labels

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        cfg, model = self.cfg, self.model
        final = bool(stats.get("final", True))
        images = self.test_images if final else monitor_subset(self.test_images, cfg.monitor_images)
        labels = self.test_labels if final or self.test_labels is None else monitor_subset(self.test_labels, cfg.monitor_images)
        n_samples = cfg.eval_samples if final else cfg.monitor_samples
        test = evaluate_elbo(model, images, n_samples=n_samples, seed=cfg.seed, sharded=True, autocast_dtype=loop.rt.autocast_dtype,
                             labels=labels)
        row = {
            "epoch": epoch + 1,
            "steps": stats["steps"],
            "train_elbo": stats["train_elbo"],
            "test_elbo": test["elbo"],
            "test_elbo_se": test["elbo_se"],
            "test_rec": test["rec"],
            "test_kl": test["kl"],
            "test_images": len(images),
            "test_samples": n_samples,
            "precision": stats["precision"],
            "sigma_x": stats["sigma_x"] if model.likelihood.has_scale else None,
            "skipped_nonfinite": stats["skipped"],
            "seconds": stats["seconds"],
        }
        if "train_objective" in stats:  # a beta-weighted or IWAE loss, under its own name
            row["train_objective"] = stats["train_objective"]
            row["objective"] = objective_name(cfg)
        row.update({k: v for k, v in stats.items() if k.startswith("train_") and k not in row})  # the objective's own terms
        self.rows.append(row)


#: the row's keys logged as scalars (besides the objective's own terms, train_<name>)
TENSORBOARD_SCALARS = ("train_elbo", "test_elbo", "test_rec", "test_kl", "sigma_x")


class TensorBoard(Callback):
    """Logs the last row of ``rows`` (the ``Monitor``'s: place it after the monitor) at every epoch's end
    to ``log_dir``, with 64 samples decoded from the prior (seeded with ``seed``). Needs the tensorboard package."""

    def __init__(self, log_dir: str | Path, model: Any, rows: list[dict[str, Any]], seed: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ValueError(f"--tensorboard needs the tensorboard package (pip install 'vaekit[tensorboard]'): {e}") from None
        self.writer: Any = SummaryWriter(log_dir=str(log_dir))
        self.model, self.rows, self.seed = model, rows, seed

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        row, writer = self.rows[-1], self.writer
        step = row["epoch"]
        extras = [k for k in row if k.startswith("train_") and k not in TENSORBOARD_SCALARS and k != "train_objective"]
        for key in (*TENSORBOARD_SCALARS, *extras):
            if row.get(key) is not None:
                writer.add_scalar(f"elbo/{key}" if "elbo" in key else f"terms/{key}", row[key], step)
        if getattr(self.model, "condition", None) is not None:  # a conditional model's samples need a condition
            writer.flush()
            return
        with seeded_rng(self.seed, next(self.model.parameters()).device):
            images = generate_images(self.model, n_images=64).clamp(0, 1).cpu()  # [64, C, H, W]
        grid = image_grid(images)  # [H', W'] grey or [H', W', 3] colour
        writer.add_image("samples", grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
        writer.flush()

    def on_end(self, loop: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
