"""Training: the assignment's ``train_vae`` and the fast loop behind it.

Speed without changing the math: the whole dataset is one tensor on the training
device, shuffled by index each epoch (no per-item loading); the per-step ELBO is
accumulated on the device and read back only every ``log_every`` steps (no per-step
host sync); Adam uses its fused or foreach kernels; every core gets a thread.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import TrainConfig, resolve_device, validate
from .model import SimpleVAE

__all__ = ["train_vae", "fit", "FitResult", "set_seed", "as_image_tensor", "configure_threads"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device): the same seed gives the same CPU results."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads() -> int:
    """Give torch one intra-op thread per core this process may run on; returns the count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def as_image_tensor(dataset: Any, name: str = "dataset") -> Tensor:
    """Images as one float tensor [N, C, H, W] from a tensor or any Dataset of (image, label)."""
    if isinstance(dataset, Tensor):
        images = dataset
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        images = dataset.tensors[0]
    else:
        try:
            n = len(dataset)
            images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(n)])  # [N, C, H, W]
        except Exception as e:  # noqa: BLE001 - report what was passed
            raise TypeError(
                f"{name} must be an image tensor [N, 1, H, W] or a Dataset yielding (image [1, H, W], label); "
                f"reading it failed: {e}"
            ) from e
    if images.ndim != 4:
        raise ValueError(f"{name} must hold images of shape [N, 1, H, W], got shape {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must hold floating-point images in [0, 1], got dtype {images.dtype} "
            "(convert uint8 pixels with x.float() / 255)"
        )
    return images


def _make_adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused kernels exist for CUDA and, in recent torch, for CPU
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "cpu" or None)


@dataclass
class FitResult:
    """What ``fit`` did: per-step ELBO (nats per image, higher is better) and counts."""

    batch_elbos: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_done: int = 0
    seconds: float = 0.0
    stopped_by: str = "epochs"  # "epochs", "max_steps" or "time_budget"


EpochHook = Callable[[int, dict[str, float]], None]


def fit(
    model: SimpleVAE,
    images: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochHook | None = None,
    log_every: int = 10,
) -> FitResult:
    """Train ``model`` on ``images`` [N, 1, H, W] as ``cfg`` says; the model and data follow cfg.device.

    ``on_epoch_end(epoch, stats)`` is called after every epoch (also a partial last one)
    with ``train_elbo`` (mean per-step ELBO, nats per image), ``sigma_x``, ``steps`` and ``seconds``.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        configure_threads()
    images = as_image_tensor(images, "images").to(device=device, dtype=torch.float32)
    n_img = images.shape[0]
    if cfg.batch_size > n_img:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {n_img} training images")
    model.to(device)
    if device.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
        model.to(memory_format=torch.channels_last)
    model.train()
    step_fn = model.elbo_terms
    if cfg.compile:
        step_fn = torch.compile(model.elbo_terms)
    amp = cfg.amp and device.type == "cuda"
    opt = _make_adam(model, cfg.lr, device)

    bs = cfg.batch_size
    steps_per_epoch = math.ceil(n_img / bs)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    budget_s = None if cfg.time_budget is None else 60.0 * cfg.time_budget
    elbos = torch.zeros(total, device=device)  # [steps] per-step ELBO, nats per image

    result = FitResult()
    step = 0
    t_start = time.perf_counter()
    epochs_bar = tqdm(range(cfg.epochs), desc="epochs", disable=not progress, dynamic_ncols=True)
    for epoch in epochs_bar:
        epoch_first = step
        # the data order of each epoch depends only on (seed, epoch)
        order_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n_img, generator=order_gen).to(device)  # [N]
        batches = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False, disable=not progress, dynamic_ncols=True)
        for i in batches:
            if step >= total:
                result.stopped_by = "max_steps"
                break
            elapsed = time.perf_counter() - t_start
            if budget_s is not None and elapsed >= budget_s:
                result.stopped_by = "time_budget"
                break
            if cfg.lr_schedule == "cosine":
                frac = step / total
                if budget_s is not None:
                    frac = max(frac, elapsed / budget_s)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

            x = images.index_select(0, perm[i * bs : (i + 1) * bs])  # [B, 1, H, W]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                terms = step_fn(x, cfg.samples, cfg.calibrated)
            loss = terms.loss.float().mean()  # nats per image
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.calibrated:
                with torch.no_grad():
                    model.log_sig_x.copy_(terms.log_sig_x)
            elbos[step] = -loss.detach()
            step += 1
            if progress and step % log_every == 0:
                batches.set_postfix(elbo=f"{elbos[step - log_every:step].mean().item():.1f}")
        if step == epoch_first:  # the step or time limit fell on an epoch boundary
            break
        stats = {
            "train_elbo": elbos[epoch_first:step].mean().item(),
            "sigma_x": model.log_sig_x.exp().item(),
            "steps": step,
            "seconds": time.perf_counter() - t_start,
        }
        result.epochs_done = epoch + 1
        epochs_bar.set_postfix(elbo=f"{stats['train_elbo']:.1f}", sigma_x=f"{stats['sigma_x']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
        if result.stopped_by != "epochs":
            break
    epochs_bar.close()
    result.steps = step
    result.seconds = time.perf_counter() - t_start
    result.batch_elbos = elbos[:step].tolist()
    return result


def train_vae(
    model: SimpleVAE,
    dataset: Any,
    epochs: int = 20,
    n_samples: int = 10,
    batch_size: int = 256,
    *,
    lr: float = 1e-3,
    device: str = "auto",
    seed: int | None = None,
    calibrated: bool = False,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` with the assignment's recipe; return the per-batch ELBO (nats per image).

    Args:
        model: a SimpleVAE (or a module with its interface).
        dataset: images [N, 1, 28, 28], a TensorDataset, or any Dataset yielding (image, label).
        epochs, n_samples, batch_size: the assignment's defaults (20, 10, 256).
        lr: Adam learning rate.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        seed: if given, seed everything first (same seed, same CPU results).
        calibrated: use the calibrated decoder (log_sig_x = 0.5 log MSE per batch).
        progress: show tqdm bars for epochs and batches.

    The model is left on the training device. Prints the learned sigma_x at the end.
    """
    if seed is not None:
        set_seed(seed)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        samples=n_samples,
        lr=lr,
        lr_schedule="constant",
        calibrated=calibrated,
        seed=0 if seed is None else seed,
        device=device,
    )
    result = fit(model, as_image_tensor(dataset), cfg, progress=progress)
    print(f"learned sigma_x = {model.log_sig_x.exp().item():.4f}")
    return result.batch_elbos
