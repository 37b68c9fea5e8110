"""The assignment's ``train_vae``: its signature and defaults, on top of ``fit``."""

from __future__ import annotations

from typing import Any

from ..config import TrainConfig
from ..model import VAE
from .batches import as_image_tensor
from .fitting import fit
from .runtime import set_seed

__all__ = ["train_vae"]


def train_vae(
    model: VAE,
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
        model: a SimpleVAE, or any ``vaekit.VAE``.
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
        options={"samples": n_samples},
        lr=lr,
        lr_schedule="constant",
        calibrated=calibrated,
        seed=0 if seed is None else seed,
        device=device,
    )
    result = fit(model, as_image_tensor(dataset), cfg, progress=progress)
    if model.likelihood.has_scale:
        print(f"learned sigma_x = {model.log_sig_x.exp().item():.4f}")
    return result.batch_elbos
