"""Training objectives: one file per objective in this package, each an ``Objective`` registered in
``OBJECTIVES`` (``--objective NAME``).

An objective takes the network and a batch, like improved-diffusion's
``training_losses(model, x, t)``, and returns per-image ``Terms`` in nats; the trainer reduces
them once. ``Terms.loss`` is what training minimizes; ``Terms.elbo`` is always the evidence
lower bound itself (at beta = 1), so metrics stay comparable whatever is trained; ``Terms.extra``
holds the objective's own named per-image terms, which training logs and the report shows.

Objectives use only the latent-variable model interface of ``vaekit.VAE``:
``encode(x) -> phi``, ``rsample_z(phi, k, eps) -> z [B, k, K]``, ``log_q(z, phi)`` and
``log_p_z(z)`` [B, k], ``kl(phi)`` (closed form, or None), ``decode(z)``, ``likelihood``
and ``log_sig_x``; so every objective works with every model that implements it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from torch import Tensor

from ..registry import Part, Registry

__all__ = ["Terms", "Objective", "OBJECTIVES", "make_objective", "decode_log_px", "on_model_device"]


class Terms(NamedTuple):
    """Per-image terms of an objective, in nats (B images)."""

    loss: Tensor  # [B] what training minimizes
    elbo: Tensor  # [B] the ELBO at beta = 1: E_q log p(x|z) - KL(q || p)
    rec: Tensor  # [B] E_q log p(x|z), the mean over the samples of z
    kl: Tensor  # [B] KL(q(z|x) || p(z)): in closed form where there is one, else its estimate on the samples
    log_sig_x: Tensor  # [] the decoder log std used (calibrated or learned; unused without a scale)
    extra: dict[str, Tensor] | None = None  # the objective's own named terms, each [B]


def batch_mean(t: Tensor) -> Tensor:
    return t.mean()


class Objective(Part):
    """What training minimizes, as per-image ``Terms`` of (model, images)."""

    #: the option that gives the samples of z per image per step (N for the ELBO, k for IWAE)
    samples_option = "samples"
    #: True if ``loss`` is exactly ``-elbo`` at beta = 1 (then the per-step ELBO is the training objective)
    trains_elbo = False

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()

    @property
    def samples(self) -> int:
        """Samples of z per image per step: the noise [samples, B, K] the trainer draws."""
        return int(getattr(self.options, self.samples_option))

    def __call__(
        self, model: Any, x: Tensor, *, beta: float = 1.0, calibrated: bool = False, eps: Tensor | None = None,
        batch_mean: Callable[[Tensor], Tensor] = batch_mean, dataset_size: int | None = None,
    ) -> Terms:
        """The per-image terms for images x [B, C, H, W].

        Args:
            model: a latent-variable model (``vaekit.VAE``).
            beta: weight of the KL (or prior and entropy) terms; warm-up passes a beta rising from 0.
            calibrated: set the Gaussian decoder's log sigma_x to this batch's optimum 0.5 log MSE
                (Rybkin et al. 2021) instead of the learned one; ignored by likelihoods without a scale.
            eps: [samples, B, K] standard-normal noise to use (data-parallel ranks pass their slice of
                the global draw); None draws it from the global RNG.
            batch_mean: how batch statistics are averaged (data-parallel: over the global batch).
            dataset_size: training images in all (for objectives whose terms need it, e.g. beta-TC).

        x and eps follow the model's device; the terms are on that device.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """How metrics name this objective: e.g. "elbo", "iwae(k=50)"."""
        return self.name if self.samples_option == "samples" else f"{self.name}(k={self.samples})"


OBJECTIVES: Registry[type[Objective]] = Registry("objective", Objective, package=__name__)


def make_objective(objective: str | Objective, options: dict | None = None) -> Objective:
    """An objective from its registry name and options (or an instance, returned as is)."""
    if isinstance(objective, Objective):
        return objective
    return OBJECTIVES[objective](OBJECTIVES.options(objective, options))


def on_model_device(model: Any, x: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """x and eps moved to the model's device (a no-op in training, where they are there already)."""
    device = model.log_sig_x.device
    return x.to(device), None if eps is None else eps.to(device)


def decode_log_px(
    model: Any, x: Tensor, z: Tensor, calibrated: bool, batch_mean: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """log p(x|z_i) [B, N] for images x [B, C, H, W] and latents z [B, N, K], and the log_sig_x used."""
    b, n = z.shape[:2]
    out = model.decode(z)  # [B, N, C, H, W]
    x_flat = x.flatten(1).unsqueeze(1).expand(b, n, -1)  # [B, N, D] (B may be 0: an empty shard)
    out_flat = out.flatten(2).to(x.dtype)  # [B, N, D]
    log_sig_x = None
    if calibrated:
        log_sig_x = model.likelihood.calibrated_log_sig_x(x_flat, out_flat, batch_mean)
    if log_sig_x is None:
        log_sig_x = model.log_sig_x
    return model.likelihood.log_prob(x_flat, out_flat, log_sig_x), log_sig_x  # [B, N], []
