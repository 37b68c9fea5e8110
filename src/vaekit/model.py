"""SimpleVAE: the assignment's convolutional VAE, parameter for parameter.

The layer layout (and so the ``state_dict`` keys ``encoder.*``, ``decoder.*`` and
``log_sig_x``) is exactly the assignment's, so a model saved from it loads unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import kl_diag_std_normal, kl_q_p_exact, log_bernoulli, log_prob, rsample, rsample_diag

if TYPE_CHECKING:
    from .distributed import BatchShard

__all__ = [
    "SimpleVAE", "ELBOTerms", "generate_images", "mean_image", "posterior_params", "param_device", "eval_mode",
    "LIKELIHOODS", "POSTERIORS",
]

LIKELIHOODS = ("gaussian", "bernoulli")
POSTERIORS = ("isotropic", "diagonal")


class ELBOTerms(NamedTuple):
    """Per-image terms of the ELBO, in nats. ``loss = -rec + kl`` is the negative ELBO."""

    loss: Tensor  # [B] negative ELBO (minimize this)
    rec: Tensor  # [B] 1/N sum_i log p(x | z_i)
    kl: Tensor  # [B] KL(q(z|x) || N(0, I)), exact
    log_sig_x: Tensor  # [] the decoder log std used (Gaussian; the unused parameter for Bernoulli)


class SimpleVAE(nn.Module):
    """Conv encoder / decoder VAE with latent size K and a learned scalar decoder std.

    Encoder: two 5x5 convs (no padding) -> Linear(flat, K+1) giving K means and one log std.
    Decoder: Linear(K, flat) -> two 5x5 transposed convs -> the mean image.
    p(x|z) = N(decoder(z), sigma_x^2 I) with one learned ``log_sig_x`` for all pixels.

    The defaults are the assignment's model. Two options go beyond it:

    * ``likelihood="bernoulli"``: the decoder's output is read as logits and
      p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)), for binary images (``log_sig_x``
      is kept for a uniform interface but unused and frozen);
    * ``posterior="diagonal"``: the encoder's last Linear gives 2K outputs, K means then
      K log stds, one per latent dimension, instead of K+1.

    Args:
        K: latent dimensionality.
        num_filters: channels of the hidden conv layers.
        image_size: height and width of the (square, single-channel) images.
        likelihood: "gaussian" (the assignment's) or "bernoulli".
        posterior: "isotropic" (the assignment's) or "diagonal".
    """

    def __init__(
        self,
        K: int = 2,
        num_filters: int = 32,
        image_size: int = 28,
        likelihood: str = "gaussian",
        posterior: str = "isotropic",
    ):
        super().__init__()
        for name, value, low in (("K", K, 1), ("num_filters", num_filters, 1), ("image_size", image_size, 9)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
        self.likelihood = likelihood
        self.posterior = posterior
        self.K = K
        self.num_filters = num_filters
        self.image_size = image_size
        kernel = 5
        self.size_after_conv = image_size - 2 * (kernel - 1)  # 28 -> 20
        flat = num_filters * self.size_after_conv**2

        self.encoder = nn.Sequential(
            nn.Conv2d(1, num_filters, kernel),  # [B, F, 24, 24]
            nn.ReLU(),
            nn.Conv2d(num_filters, num_filters, kernel),  # [B, F, 20, 20]
            nn.ReLU(),
            nn.Flatten(),  # [B, F*20*20]
            # [B, K+1]: K means, then one log std (diagonal: [B, 2K], K means then K log stds)
            nn.Linear(flat, K + 1 if posterior == "isotropic" else 2 * K),
        )
        self.decoder = nn.Sequential(
            nn.Linear(K, flat),  # [B*N, F*20*20]
            nn.Unflatten(1, (num_filters, self.size_after_conv, self.size_after_conv)),
            nn.ReLU(),
            nn.ConvTranspose2d(num_filters, num_filters, kernel),  # [B*N, F, 24, 24]
            nn.ReLU(),
            nn.ConvTranspose2d(num_filters, 1, kernel),  # [B*N, 1, 28, 28]
        )
        # one decoder log std for all pixels, as in the assignment (unused by a Bernoulli decoder)
        self.log_sig_x = nn.Parameter(torch.zeros(()), requires_grad=likelihood == "gaussian")

    # ------------------------------------------------------------------ pieces

    def _check_images(self, x: Tensor) -> None:
        s = self.image_size
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be images of shape [B, 1, {s}, {s}], got {got}")

    def encode(self, x: Tensor) -> Tensor:
        """Images [B, 1, H, W] -> posterior parameters [B, K+1] (diagonal: [B, 2K])."""
        self._check_images(x)
        return self.encoder(x)

    def split_posterior(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output -> means [B, K] and log stds [B, 1] (isotropic) or [B, K] (diagonal)."""
        return posterior_params(self, phi)

    def decode(self, samples_z: Tensor) -> Tensor:
        """Latents [B, N, K] -> decoder output [B, N, 1, H, W]: mean images (Gaussian) or logits (Bernoulli)."""
        if not isinstance(samples_z, Tensor) or samples_z.ndim != 3 or samples_z.shape[-1] != self.K:
            got = list(samples_z.shape) if isinstance(samples_z, Tensor) else type(samples_z).__name__
            raise ValueError(f"samples_z must have shape [B, N, K={self.K}], got {got}")
        b, n, k = samples_z.shape
        z = samples_z.reshape(b * n, k)  # [B*N, K]
        if self.decoder[3].weight.is_contiguous(memory_format=torch.channels_last):
            mu = self.decoder[2:](self._linear_channels_last(z))  # [B*N, 1, H, W]
        else:
            mu = self.decoder(z)  # [B*N, 1, H, W]
        return mu.reshape(b, n, 1, self.image_size, self.image_size)  # [B, N, 1, H, W]

    def _linear_channels_last(self, z: Tensor) -> Tensor:
        """decoder[0:2] (Linear, Unflatten) with the output laid out channels_last, saving a copy.

        The same Linear, its weight rows taken in (h, w, c) order instead of (c, h, w): the
        product is then [B*N, S, S, F] in memory, which is [B*N, F, S, S] in channels_last.
        """
        f, s = self.num_filters, self.size_after_conv
        lin = self.decoder[0]
        w = lin.weight.view(f, s * s, self.K).transpose(0, 1).reshape(f * s * s, self.K)  # [S*S*F, K]
        bias = lin.bias.view(f, s * s).t().reshape(-1)  # [S*S*F]
        return F.linear(z, w, bias).view(z.shape[0], s, s, f).permute(0, 3, 1, 2)  # [B*N, F, S, S]

    def log_px(self, x_flat: Tensor, out_flat: Tensor, log_sig_x: Tensor) -> Tensor:
        """log p(x|z) [B, N] in nats for images x [B, N, D] and decoder outputs [B, N, D]."""
        if self.likelihood == "bernoulli":
            return log_bernoulli(x_flat, out_flat)  # [B, N]
        b, n, _ = x_flat.shape
        return log_prob(x_flat, out_flat, log_sig_x.to(x_flat.dtype).reshape(1, 1).expand(b, n))  # [B, N]

    # ------------------------------------------------------------------ the objective

    def elbo_terms(self, x: Tensor, n: int = 1, calibrated: bool = False, shard: BatchShard | None = None) -> ELBOTerms:
        """Per-image ELBO terms with n samples of z.

        With ``calibrated=True`` the decoder std is set to its optimum for this batch,
        log sigma_x = 0.5 log(MSE) ("calibrated decoder", Rybkin et al. 2021), instead of
        the learned ``log_sig_x``; the value used is returned in the terms. A Bernoulli
        decoder has no std, so ``calibrated`` does not apply to it and is ignored.

        ``shard`` (data-parallel training): ``x`` is this rank's slice of a larger global
        batch. The samples of z are then this rank's slice of the noise drawn for the whole
        global batch, and the calibrated MSE is the global batch's (all-reduced), so the
        ranks together compute exactly what one process computes on the global batch.
        """
        # under autocast the networks may run in bf16; the objective is computed in x's dtype
        phi = self.encode(x).to(x.dtype)  # [B, K+1] (diagonal: [B, 2K])
        eps = None
        if shard is not None:
            if shard.local_size != x.shape[0]:
                raise ValueError(f"x has {x.shape[0]} images but shard holds {shard.local_size} ({shard})")
            eps = shard.draw(lambda b: torch.empty((n, b, self.K), dtype=phi.dtype, device=phi.device).normal_(), dim=1)  # [N, B, K]
        if self.posterior == "isotropic":
            z = rsample(phi, n, eps)  # [B, N, K]
            kl = kl_q_p_exact(phi, torch.zeros_like(phi))  # [B]
        else:
            mu_z, log_sig_z = self.split_posterior(phi)  # [B, K], [B, K]
            z = rsample_diag(mu_z, log_sig_z, n, eps)  # [B, N, K]
            kl = kl_diag_std_normal(mu_z, log_sig_z).sum(dim=1)  # [B]
        out = self.decode(z)  # [B, N, 1, H, W]
        b = x.shape[0]
        x_flat = x.flatten(1).unsqueeze(1).expand(b, n, -1)  # [B, N, D] (B may be 0: an empty shard)
        out_flat = out.flatten(2).to(x.dtype)  # [B, N, D]
        if calibrated and self.likelihood == "gaussian":
            # argmax_sigma of sum log N(x; mu, sigma^2): sigma^2 = mean squared error
            sq_err = (x_flat - out_flat).detach().pow(2)  # [B, N, D]
            mse = sq_err.mean() if shard is None else shard.mean(sq_err)
            log_sig_x = 0.5 * torch.log(mse.clamp_min(1e-12))
        else:
            log_sig_x = self.log_sig_x
        rec = self.log_px(x_flat, out_flat, log_sig_x).mean(dim=1)  # [B]
        return ELBOTerms(loss=kl - rec, rec=rec, kl=kl, log_sig_x=log_sig_x.detach())

    def loss(self, x: Tensor, n: int = 1) -> Tensor:
        """Per-image negative ELBO [B] in nats (what the trainer minimizes)."""
        return self.elbo_terms(x, n).loss

    def elbo(self, x: Tensor, n: int = 1) -> Tensor:
        """The ELBO (higher is better), averaged over the batch, in nats per image.

        As in the assignment: 1/(B N) sum log p(x|z) - 1/B sum KL(q || N(0, I)).
        Train by minimizing ``-model.elbo(x, n)``.
        """
        return -self.loss(x, n).mean()

    def forward(self, x: Tensor, n: int = 1) -> Tensor:
        """Mean reconstructions [B, N, 1, H, W] of x through n samples of z."""
        mu_z, log_sig_z = self.split_posterior(self.encode(x))
        return mean_image(self, rsample_diag(mu_z, log_sig_z, n))


def posterior_params(model: nn.Module, phi: Tensor) -> tuple[Tensor, Tensor]:
    """Encoder output of any module with SimpleVAE's interface -> means [B, K] and log stds:
    [B, 1] from [B, K+1] (isotropic), or [B, K] from [B, 2K] when ``model.posterior == "diagonal"``."""
    if getattr(model, "posterior", "isotropic") == "diagonal":
        k = phi.shape[1] // 2
        return phi[:, :k], phi[:, k:]  # [B, K], [B, K]
    return phi[:, :-1], phi[:, -1:]  # [B, K], [B, 1]


def param_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a module's parameters (inputs are moved there)."""
    p = next(model.parameters())
    return p.device, p.dtype


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model.eval()``, then restore its train/eval mode (also on errors)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def mean_image(model: nn.Module, samples_z: Tensor) -> Tensor:
    """E[x|z] [B, N, C, H, W] for latents [B, N, K] from any module with SimpleVAE's ``decode``
    (the sigmoid of the logits when ``model.likelihood == "bernoulli"``)."""
    out = model.decode(samples_z)
    return torch.sigmoid(out) if getattr(model, "likelihood", "gaussian") == "bernoulli" else out


@torch.no_grad()
def generate_images(vae: SimpleVAE, K: int | None = None, n_images: int = 9) -> Tensor:
    """Draw z ~ N(0, I) as randn(X, 1, K) and decode to mean images [X, 1, H, W] (pixel probabilities for Bernoulli).

    ``K`` defaults to the model's latent size; a different value is an error.
    """
    k = vae.K if K is None else K
    if k != vae.K:
        raise ValueError(f"K={k} does not match the model's latent size K={vae.K}")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be an int >= 1, got {n_images!r}")
    param = next(vae.parameters())
    z = torch.randn(n_images, 1, k, device=param.device, dtype=param.dtype)  # [X, 1, K]
    return mean_image(vae, z)[:, 0]  # [X, 1, H, W]
