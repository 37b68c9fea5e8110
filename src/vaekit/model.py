"""The VAE as parts: an encoder, a decoder, a posterior, a likelihood and a prior.

``VAE(encoder, decoder, latent_dim, likelihood=..., posterior=..., prior=...)`` composes any pair
of networks; ``build_model(ModelConfig, image_shape)`` builds it from a config (as nanoGPT
rebuilds its model from ``model_args``); ``SimpleVAE`` is the assignment's model, the same VAE
built from the "assignment" architecture, with the assignment's parameter names (``encoder.*``,
``decoder.*``, ``log_sig_x``), so its state_dicts load unchanged.

The latent-variable model interface, which the objectives (``vaekit.objectives``), the
importance-sampled log-likelihood and the samplers use, and which any other model (a
hierarchical VAE, say) implements the same way:

    encode(x) -> phi [B, P]              the posterior's parameters
    rsample_z(phi, k, eps) -> z [B, k, K]
    log_q(z, phi) -> [B, k]              log q(z|x)
    log_p_z(z) -> [B, k]                 log p(z), exact
    kl(phi) -> [B] or None               KL(q || p) in closed form, where there is one
    decode(z) -> [B, k, C, H, W]         the likelihood's parameters; mean_image(z): E[x|z]
    sample_z(n) -> [n, K]                z ~ p(z)

A conditional model (``ModelConfig.condition``: q(z|x, c), p(x|z, c); ``vaekit.conditions``) is this VAE with
its networks fed the condition of the images in flight, held while they pass by
``vaekit.conditioning.given(model, x, labels)``; its ``condition`` attribute is the condition part.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .architectures import ARCHITECTURES, build_networks, check_images, count_parameters, flops_per_image
from .conditioning import conditional_likelihood, conditional_networks, given
from .config import ModelConfig
from .likelihoods import Likelihood, make_likelihood
from .objectives import make_objective
from .posteriors import Posterior, make_posterior
from .priors import Prior, make_prior

__all__ = ["VAE", "SimpleVAE", "generate_images", "param_device", "eval_mode", "build_model", "describe_model"]


class VAE(nn.Module):
    """A VAE over z in R^K from an encoder, a decoder, a posterior, a likelihood and a prior (N(0, I) by default).

    Args:
        encoder: images [B, C, H, W] -> the posterior's parameters [B, P] (P = K+1 for the isotropic
            posterior, 2K for the diagonal one).
        decoder: latents [M, K] -> decoder outputs [M, C, H, W] (the mean for "gaussian", logits for
            "bernoulli" and "continuous-bernoulli").
        latent_dim: K.
        likelihood: "gaussian" (one scalar sigma_x, the ``log_sig_x`` parameter), "bernoulli",
            "continuous-bernoulli", or a ``vaekit.likelihoods.Likelihood``.
        posterior: "isotropic", "diagonal", or a ``vaekit.posteriors.Posterior``.
        image_shape: [C, H, W] of the images, if known (checked on input, used to draw samples).
        prior: "standard-normal" (N(0, I)), another name in ``vaekit.priors.PRIORS``, or a ``Prior``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: str | Likelihood = "gaussian",
        posterior: str | Posterior = "isotropic",
        image_shape: tuple[int, int, int] | None = None,
        prior: str | Prior = "standard-normal",
    ):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.likelihood = make_likelihood(likelihood)
        self.posterior = make_posterior(posterior)
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        # one decoder log std for all pixels, as in the assignment (frozen and unused without a scale)
        self.log_sig_x = nn.Parameter(torch.zeros(()), requires_grad=self.likelihood.has_scale)
        # after log_sig_x, so that the parameters (and the optimizer's state) of earlier runs keep their order
        self.prior = make_prior(prior, latent_dim, self.image_shape)

    @property
    def K(self) -> int:
        """The latent size (the assignment's name for it)."""
        return self.latent_dim

    @property
    def num_params(self) -> int:
        """P: the size of the encoder's output."""
        return self.posterior.num_params(self.latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> posterior parameters phi [B, P]."""
        check_images(x, self.image_shape)
        phi = self.encoder(x)  # [B, P]
        if phi.ndim != 2 or phi.shape[1] != self.num_params:
            raise ValueError(
                f"the encoder must map images to [B, P={self.num_params}] ({self.posterior.name} posterior, "
                f"K={self.latent_dim}), got {list(phi.shape)}"
            )
        return phi

    def decode(self, samples_z: Tensor) -> Tensor:
        """Latents [B, N, K] -> decoder outputs [B, N, C, H, W] (means, or logits; see ``mean_image``)."""
        if not isinstance(samples_z, Tensor) or samples_z.ndim != 3 or samples_z.shape[-1] != self.latent_dim:
            got = list(samples_z.shape) if isinstance(samples_z, Tensor) else type(samples_z).__name__
            raise ValueError(f"samples_z must have shape [B, N, K={self.latent_dim}], got {got}")
        b, n, K = samples_z.shape
        out = self.decoder(samples_z.reshape(b * n, K))  # [B*N, C, H, W]
        if out.ndim != 4 or out.shape[0] != b * n:
            raise ValueError(f"the decoder must map latents [M, K] to [M, C, H, W], got {list(out.shape)} for M={b * n}")
        return out.reshape(b, n, *out.shape[1:])  # [B, N, C, H, W]

    def mean_image(self, samples_z: Tensor) -> Tensor:
        """E[x|z] [B, N, C, H, W] for latents [B, N, K]."""
        return self.likelihood.mean(self.decode(samples_z))

    # ---------------------------------------------------------------- the latent-variable model interface

    def rsample_z(self, phi: Tensor, k: int, eps: Tensor | None = None) -> Tensor:
        """k reparameterized samples z ~ q(z|x) [B, k, K]; ``eps`` [k, B, K] or None (the global RNG)."""
        return self.posterior.rsample(phi, k, eps)

    def log_q(self, z: Tensor, phi: Tensor) -> Tensor:
        """log q(z|x) [B, k] for z [B, k, K], in nats."""
        return self.posterior.log_prob(z, phi)

    def log_p_z(self, z: Tensor) -> Tensor:
        """log p(z) [B, k] for z [B, k, K], in nats (exact)."""
        return self.prior.log_prob(z, self)

    def kl(self, phi: Tensor) -> Tensor | None:
        """KL(q(z|x) || p(z)) [B] in closed form, or None where the prior has none."""
        return self.prior.kl(self.posterior, phi)

    @torch.no_grad()
    def sample_z(self, n: int) -> Tensor:
        """n draws z ~ p(z) [n, K] from the global RNG."""
        return self.prior.sample(n, self)

    def loss(self, x: Tensor, n: int = 1) -> Tensor:
        """Per-image negative ELBO [B] in nats with n samples of z."""
        return make_objective("elbo", {"samples": n})(self, x).loss

    def elbo(self, x: Tensor, n: int = 1) -> Tensor:
        """The ELBO (higher is better), averaged over the batch, in nats per image.

        As in the assignment: 1/(B N) sum log p(x|z) - 1/B sum KL(q || N(0, I)).
        Train by minimizing ``-model.elbo(x, n)``.
        """
        return -self.loss(x, n).mean()

    def forward(self, x: Tensor, n: int = 1) -> Tensor:
        """Mean reconstructions [B, N, C, H, W] of x through n samples of z."""
        return self.mean_image(self.posterior.rsample(self.encode(x), n))


class SimpleVAE(VAE):
    """The assignment's conv VAE with latent size K and a learned scalar decoder std.

    Encoder: two 5x5 convs (no padding) -> Linear(flat, K+1) giving K means and one log std.
    Decoder: Linear(K, flat) -> two 5x5 transposed convs -> the mean image.
    p(x|z) = N(decoder(z), sigma_x^2 I) with one learned ``log_sig_x`` for all pixels.

    The defaults are the assignment's model; ``likelihood`` and ``posterior`` swap those parts
    (see ``VAE``), ``image_size`` takes other square single-channel images.
    """

    def __init__(
        self,
        K: int = 2,
        num_filters: int = 32,
        image_size: int = 28,
        likelihood: str | Likelihood = "gaussian",
        posterior: str | Posterior = "isotropic",
    ):
        for name, value, low in (("K", K, 1), ("num_filters", num_filters, 1), ("image_size", image_size, 9)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        post = make_posterior(posterior)
        encoder, decoder = build_networks("assignment", {"num_filters": num_filters}, (1, image_size, image_size), K, post.num_params(K))
        super().__init__(encoder, decoder, K, likelihood, post, (1, image_size, image_size))
        self.num_filters = num_filters
        self.image_size = image_size
        self.size_after_conv = image_size - 8  # 28 -> 20


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


@torch.no_grad()
def generate_images(vae: VAE, K: int | None = None, n_images: int = 9) -> Tensor:
    """Draw z ~ N(0, I) as randn(X, 1, K) and decode to mean images [X, C, H, W].

    ``K`` defaults to the model's latent size; a different value is an error.
    """
    K = vae.latent_dim if K is None else K
    if K != vae.latent_dim:
        raise ValueError(f"K={K} does not match the model's latent size K={vae.latent_dim}")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be an int >= 1, got {n_images!r}")
    z = vae.sample_z(n_images)  # [X, K]; for N(0, I) the numbers of randn(X, 1, K)
    return vae.mean_image(z[:, None, :])[:, 0]  # [X, C, H, W]


def build_model(model_cfg: ModelConfig, image_shape: tuple[int, int, int] = (1, 28, 28)) -> VAE:
    """The VAE that ``model_cfg`` describes, for images of shape [C, H, W] (as nanoGPT rebuilds from model_args).

    ``arch`` None becomes the default for these images (``ModelConfig.resolved``). Raises ValueError
    (naming the architecture and the shape) if the architecture can't take these images, or naming
    the option if an option is not the chosen parts'.
    """
    cfg = model_cfg.resolved(image_shape)
    cfg.check_options()
    c, h, w = image_shape
    if min(c, h, w) < 1:
        raise ValueError(f"image shape must be [C, H, W] with positive sizes, got {list(image_shape)}")
    posterior = make_posterior(cfg.posterior, cfg.PARTS["posterior"].pick_options(cfg.posterior, cfg.options))
    likelihood = make_likelihood(cfg.likelihood, cfg.PARTS["likelihood"].pick_options(cfg.likelihood, cfg.options))
    prior = make_prior(cfg.prior, cfg.latent_dim, (c, h, w), cfg.PARTS["prior"].pick_options(cfg.prior, cfg.options))
    arch = ARCHITECTURES[cfg.arch](cfg.part_options("arch"))
    if cfg.condition is not None:  # q(z|x, c) and p(x|z, c): the architecture's networks fed the condition
        return _conditional_model(cfg, arch, (c, h, w), likelihood, posterior, prior)
    own = arch.build_model((c, h, w), cfg.latent_dim, likelihood, posterior, prior)
    if own is not None:  # a model of the architecture's own
        return own
    encoder, decoder = arch.build((c, h, w), cfg.latent_dim, posterior.num_params(cfg.latent_dim))
    return VAE(encoder, decoder, cfg.latent_dim, likelihood=likelihood, posterior=posterior, image_shape=(c, h, w), prior=prior)


def _conditional_model(cfg: ModelConfig, arch, image_shape, likelihood, posterior, prior) -> VAE:
    """A conditional VAE (``vaekit.conditions``, ``vaekit.conditioning``): its ``condition`` holds c for the networks."""
    if type(arch).build_model is not ARCHITECTURES.base.build_model:
        raise ValueError(f"--condition {cfg.condition} needs an architecture whose encoder and decoder vaekit wraps; "
                         f"arch {cfg.arch} builds a model of its own")
    if prior.uses_encoder:
        raise ValueError(f"--condition {cfg.condition} cannot take --prior {cfg.prior}: that prior runs the encoder on inputs without "
                         f"a condition c; use --prior standard-normal")
    condition = cfg.PARTS["condition"][cfg.condition](cfg.part_options("condition"))
    encoder, decoder = conditional_networks(condition, arch, image_shape, cfg.latent_dim, posterior.num_params(cfg.latent_dim))
    model = VAE(encoder, decoder, cfg.latent_dim, likelihood=conditional_likelihood(likelihood, condition), posterior=posterior,
                image_shape=image_shape, prior=prior)
    model.condition = condition
    return model


def describe_model(model: VAE, arch: str) -> str:
    """One line: architecture, parameter count and forward FLOPs per image of encoder and decoder."""
    shape = model.image_shape or (1, 28, 28)
    with given(model, torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long)):  # a conditional model's: of class 0
        enc = flops_per_image(model.encoder, torch.zeros(1, *shape))
        dec = flops_per_image(model.decoder, torch.zeros(1, model.latent_dim))
    prior = "" if model.prior.name == "standard-normal" else f", {model.prior.name} prior"
    sizes = getattr(model, "layer_sizes", None) or [model.latent_dim]  # several stochastic layers: K_1+...+K_L
    prior += "" if getattr(model, "condition", None) is None else f", {model.condition.describe()}"
    return (
        f"model: arch {arch}, {count_parameters(model) / 1e6:.3f}M parameters, K={'+'.join(map(str, sizes))}, "
        f"{model.posterior.name} posterior, {model.likelihood.name} likelihood{prior}; forward FLOPs per image: encoder "
        f"{enc / 1e6:.2f}M + decoder {dec / 1e6:.2f}M per sample of z"
    )
