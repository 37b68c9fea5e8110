"""A training run as a folder: train, evaluate each epoch, save, and draw its figures.

A run folder holds::

    config.json        model and training configs, dataset, device, versions
    model.safetensors  the weights (state_dict of a SimpleVAE), rewritten each epoch
    metrics.jsonl      one JSON object per epoch: train/test ELBO (nats per image), sigma_x, seconds
    elbo_curve.png     the training curve with per-epoch train and test ELBO
    samples.png        64 images decoded from z ~ N(0, I)

Every file is written atomically, so an interrupted run never leaves a torn file.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import CheckpointError, atomic_write_text, load_weights, read_json, save_weights
from .config import ModelConfig, TrainConfig, config_from_dict, config_to_dict, resolve_device, validate
from .data import load_dataset
from .evaluate import evaluate_elbo
from .model import SimpleVAE, generate_images
from .plots import plot_elbo_curve, plot_samples
from .train import fit, set_seed

__all__ = ["train_run", "load_run", "sample_run", "RUN_FILES"]

RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", "elbo_curve.png", "samples.png")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} already exists and is not empty; pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def train_run(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train a SimpleVAE as configured and write the run folder ``out_dir``; returns its path."""
    validate(model_cfg)
    validate(train_cfg)
    device = resolve_device(train_cfg.device)  # fail early on an unavailable device
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)

    data = load_dataset(train_cfg.dataset)
    image_size = data.train_images.shape[-1]
    set_seed(train_cfg.seed)
    model = SimpleVAE(K=model_cfg.latent_dim, num_filters=model_cfg.num_filters, image_size=image_size)
    meta = {
        "vaekit_version": __version__,
        "model": config_to_dict(model_cfg),
        "train": config_to_dict(train_cfg),
        "data": {"name": data.name, "image_size": image_size, "train_images": len(data.train_images), "test_images": len(data.test_images)},
        "device": str(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(out / "config.json", json.dumps(meta, indent=2) + "\n")

    epochs: list[dict[str, Any]] = []

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        test = evaluate_elbo(model, data.test_images, n_samples=train_cfg.eval_samples, seed=train_cfg.seed)
        row = {
            "epoch": epoch + 1,
            "steps": stats["steps"],
            "train_elbo": stats["train_elbo"],
            "test_elbo": test["elbo"],
            "test_elbo_se": test["elbo_se"],
            "test_rec": test["rec"],
            "test_kl": test["kl"],
            "sigma_x": stats["sigma_x"],
            "seconds": stats["seconds"],
        }
        epochs.append(row)
        save_weights(out / "model.safetensors", model.state_dict(), {"format": "vaekit.SimpleVAE"})
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in epochs))

    result = fit(model, data.train_images, train_cfg, progress=progress, on_epoch_end=on_epoch_end)

    steps_per_epoch = math.ceil(len(data.train_images) / train_cfg.batch_size)
    plot_elbo_curve(result.batch_elbos, out / "elbo_curve.png", epochs, steps_per_epoch)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train_cfg.seed)
        plot_samples(generate_images(model, n_images=64), out / "samples.png")
    return out


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[SimpleVAE, dict[str, Any]]:
    """Load a run folder's model (on ``device``) and its config.json; CheckpointError if anything is off."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist or is not a folder")
    meta = read_json(run / "config.json")
    try:
        model_cfg = config_from_dict(ModelConfig, meta["model"])
        validate(model_cfg)
        image_size = int(meta.get("data", {}).get("image_size", 28))
        model = SimpleVAE(K=model_cfg.latent_dim, num_filters=model_cfg.num_filters, image_size=image_size)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run / 'config.json'} is not a vaekit run config: {e}") from None
    tensors, _ = load_weights(run / "model.safetensors")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{run / 'model.safetensors'} does not match the SimpleVAE in config.json: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    for key, t in tensors.items():
        if t.shape != expected[key].shape:
            raise CheckpointError(
                f"{run / 'model.safetensors'}: {key} has shape {list(t.shape)}, "
                f"expected {list(expected[key].shape)} for the model in config.json"
            )
    model.load_state_dict(tensors)
    return model.to(resolve_device(device)), meta


def sample_run(run_dir: str | Path, n: int = 64, seed: int = 0, out: str | Path | None = None) -> Path:
    """Write a grid of ``n`` new images from a trained run; returns the PNG's path."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    model, _ = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / f"samples_seed{seed}.png"
    set_seed(seed)
    plot_samples(generate_images(model, n_images=n), path, title=f"{n} samples from the prior (seed {seed})")
    return path
