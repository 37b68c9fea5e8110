"""Samplers: where the latent codes of new images come from. One file per sampler in this package,
each a ``Sampler`` registered in ``SAMPLERS`` (``vaekit sample --sampler NAME``).

A sampler may first fit something to the run (a Gaussian mixture on the training set's posterior
means, a prior over a VQ-VAE's codes), kept in the run folder's own files so that it is fitted
once; then it draws z [n, K] for the model's decoder, seeded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..registry import Part, Registry

__all__ = ["Sampler", "SAMPLERS", "make_sampler", "decode_samples"]


class Sampler(Part):
    """Draws the latent codes of new images."""

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()

    def refusal(self, model: Any) -> str | None:
        """Why this sampler cannot draw codes for ``model`` (one line naming what it needs), or None when it can."""
        return None

    def prepare(self, run: Any, model: Any, data: Any = None) -> dict[str, Any] | None:
        """Fit what this sampler needs from the run folder ``run`` (a ``vaekit.runfolder.RunFolder``) and its
        dataset ``data`` (loaded if None), reusing or writing its own files there. Returns what to report about
        the fit (e.g. held-out log-densities), or None."""
        return None

    def sample_z(self, model: Any, n: int, seed: int) -> Tensor:
        """n latent codes [n, K] for ``model``, the same for the same seed."""
        raise NotImplementedError

    def default_file(self, seed: int) -> str:
        """The PNG ``vaekit sample`` writes in the run folder when no --out is given."""
        return f"samples_{self.name}.png"

    def title(self, n: int, seed: int) -> str:
        return f"{n} samples from the {self.name} sampler (seed {seed})"

    def explorer_gmm(self) -> Any:
        """A ``vaekit.gmm.GMM`` the latent explorer can draw from in the page, or None."""
        return None


SAMPLERS: Registry[type[Sampler]] = Registry("sampler", Sampler, package=__name__)


def make_sampler(sampler: str | Sampler, options: dict | None = None) -> Sampler:
    """A sampler from its registry name and options (or an instance, returned as is)."""
    if isinstance(sampler, Sampler):
        return sampler
    return SAMPLERS[sampler](SAMPLERS.options(sampler, options))


@torch.no_grad()
def decode_samples(model: Any, z: Tensor) -> Tensor:
    """Mean images [n, C, H, W] (float32, CPU) decoded from latent codes z [n, K]."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        return model.mean_image(z.to(p.device, p.dtype)[:, None, :])[:, 0].float().cpu()
    finally:
        model.train(was_training)
