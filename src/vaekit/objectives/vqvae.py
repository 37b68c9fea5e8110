"""The VQ-VAE's loss (van den Oord et al. 2017, eq. 3): the reconstruction through the straight-through code
vectors, the codebook loss and beta x the commitment loss; for ``--arch vqvae`` models only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from ..registry import option
from . import OBJECTIVES, Objective, Terms, batch_mean, decode_log_px, on_model_device


@OBJECTIVES.register
class VQVAELoss(Objective):
    """vqvae: the VQ-VAE loss, -log p(x|z_q) + ||sg[z_e] - e||^2 + --commitment x ||z_e - sg[e]||^2 (--arch vqvae)"""

    name = "vqvae"
    samples_option = "samples"

    @dataclass
    class Options:
        samples: int = option(1, "samples of z per image per step (N; a VQ-VAE's are all the same code grid: keep 1)", min=1)
        commitment: float = option(0.25, "weight beta of the commitment loss ||z_e - sg[e]||^2", min=0.0)

    def __call__(
        self, model: Any, x: Tensor, *, beta: float = 1.0, calibrated: bool = False, eps: Tensor | None = None,
        batch_mean: Callable[[Tensor], Tensor] = batch_mean, dataset_size: int | None = None,
    ) -> Terms:
        """loss = -log p(x|z_q(x)) + ||sg[z_e(x)] - e||^2 + c ||z_e(x) - sg[e]||^2 + KL   (van den Oord et al. 2017, eq. 3)

        z_q(x) reaches the decoder through the straight-through estimator, so the reconstruction's gradient
        passes to the encoder unchanged; the squared distances are summed over the image's h w D numbers.
        With ``--ema`` the codebook loss has no gradient (the moving averages learn the codebook) and is not
        added. The KL, h w log M, is a constant (q one-hot, p uniform), added so that -loss <= ``elbo``;
        ``elbo`` = log p(x|z_q) - h w log M is the ELBO under the uniform prior. ``beta`` (KL warm-up) is
        ignored: the KL has no gradient. Training steps also update the codebook (``VQVAE.update_codebook``).

        ``extra`` (per image [B]; the batch's statistics repeated over its images): ``commitment`` and
        ``codebook`` (the two squared distances), ``perplexity`` (exp of the entropy of the batch's code
        frequencies), ``codes_used`` (distinct codes in the batch) and ``restarts`` (dead codes restarted).
        """
        if not hasattr(model, "codebook_losses"):
            raise ValueError(
                f"objective vqvae trains a VQ-VAE and needs --arch vqvae; this model ({type(model).__name__}) has no codebook"
            )
        x, eps = on_model_device(model, x, eps)
        phi = model.encode(x).to(x.dtype)  # [B, K] z_e(x)
        codebook, commitment, codes = model.codebook_losses(phi)  # [B], [B], [B, h*w]
        z = model.rsample_z(phi, self.samples, eps)  # [B, N, K] straight-through code vectors
        log_px, log_sig_x = decode_log_px(model, x, z, calibrated, batch_mean)  # [B, N], []
        rec = log_px.mean(dim=1)  # [B]
        kl = model.kl(phi)  # [B] the constant h w log M
        loss = kl - rec + self.options.commitment * commitment
        if not model.codebook.ema:
            loss = loss + codebook
        updates = model.update_codebook(phi, codes)  # training mode only, under no_grad
        extra = {"commitment": commitment.detach(), "codebook": codebook.detach(), **_batch_stats(model, codes, updates, rec)}
        return Terms(loss=loss, elbo=rec - kl, rec=rec, kl=kl, log_sig_x=log_sig_x.detach(), extra=extra)

    def describe(self) -> str:
        return f"{self.name}(commitment={self.options.commitment:g})"


def _batch_stats(model: Any, codes: Tensor, updates: dict[str, Any], like: Tensor) -> dict[str, Tensor]:
    """The batch's codebook statistics, each repeated over its B images: perplexity, codes used, restarts."""
    from ..architectures.vqvae import perplexity

    ones = like.detach().new_ones(like.shape[0])  # [B]
    if codes.device.type == "meta":  # a stand-in without data: shapes only
        return {"perplexity": ones, "codes_used": ones, "restarts": ones}
    return {
        "perplexity": ones * perplexity(codes, model.codebook_size).to(like.dtype),
        "codes_used": ones * float(codes.unique().numel()),
        "restarts": ones * updates["restarts"].to(like.dtype),
    }
