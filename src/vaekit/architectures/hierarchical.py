"""Hierarchical VAEs with L stochastic layers and bottom-up inference, as in Burda et al. 2016: ``--arch hvae``.

    p(x, z) = p(x|z_1) p(z_1|z_2) ... p(z_{L-1}|z_L) p(z_L),    q(z|x) = q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1})
    (Burda et al. 2016, Sec. 2, their eq. 1 and 2)

The defaults are Burda et al.'s two-layer network, Sec. 5.1 of the paper:

    "An architecture with two stochastic layers h1 and h2, with 100 and 50 units, respectively. In between x and
    h1 were two deterministic layers with 200 units each. In between h1 and h2 were two deterministic layers with
    100 units each. All deterministic hidden units used the tanh nonlinearity. All stochastic layers used Gaussian
    distributions with diagonal covariance, with the exception of the visible layer, which used Bernoulli
    distributions. An exp nonlinearity was applied to the predicted variances of the Gaussian distributions."

and their code (yburda/iwae, experiments.py: ``latent_units = [100, 50]``, ``hidden_units_q = [[200, 200], [100,
100]]``, ``hidden_units_p = [[100, 100], [200, 200]]``): the generative networks mirror the recognition ones, and
each Gaussian is a tanh trunk, a Linear for the mean and exp of a Linear for the std. That model is
``--arch hvae --latent-dim 50 --posterior diagonal --likelihood bernoulli`` (``--lower-layers 100``,
``--hidden "200,200;100,100"`` and ``--activation tanh`` are the defaults).

**Sizes.** The config's ``--latent-dim`` is the size of the *top* layer z_L: the prior's dimension, and the latent
space the figures, the explorer and the samplers see (``model.K``). ``--lower-layers`` gives z_1 ... z_{L-1}, bottom
first. ``--hidden`` gives each stochastic layer's hidden widths, bottom first, ';' between layers (x-z_1 first);
one group without ';' is used for every layer, an empty group makes that conditional linear.

**The latent-variable interface** (``vaekit.model``), so that the objectives, the importance-sampled log-likelihood
and the trainer work unchanged: z is every layer's latents concatenated, bottom first, [B, k, K_1 + ... + K_L]
(``model.latent_dim`` is that sum, and the trainer's noise is eps [k, B, K_1 + ... + K_L]); ``encode(x)`` gives
q(z_1|x)'s parameters; ``rsample_z`` samples the chain; ``log_q`` = sum_l log q(z_l|z_{l-1}); ``log_p_z`` =
log p(z_L) (the prior part: N(0, I), or the VampPrior over z_L) + sum_l log p(z_l|z_{l+1}); ``kl`` is None (the
objectives estimate it); ``sample_z`` samples ancestrally; ``decode`` reads z_1 only.

**The top layer's view** (figures, explorer, samplers): ``top_posterior(x)`` is q(z_L|x) along the mean path
mu_1(x), mu_2(mu_1), ... (``latents.posterior_means`` and the VampPrior use it); ``mean_image`` of top-layer latents
[B, N, K_L] decodes them down the mean path of p(z_l|z_{l+1}); ``explorer_decoder`` is that path as plain layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..distributions import log_prob_diag
from ..model import VAE
from ..priors import make_prior
from ..registry import option
from . import ACTIVATIONS, ARCHITECTURES, Architecture, activation

__all__ = ["Hierarchical", "HierarchicalVAE", "GaussianLayer", "BottomDecoder", "parse_sizes", "parse_hidden_groups"]

LOG_2PI = math.log(2.0 * math.pi)


def parse_sizes(text: str) -> list[int]:
    """ "100,50" -> [100, 50]: the sizes of the stochastic layers below the top; a clear error for anything else."""
    try:
        sizes = [int(part) for part in str(text).split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"lower_layers must be comma-separated positive layer sizes such as 100 or 100,50, got {text!r}")
    return sizes


def parse_hidden_groups(text: str, layers: int) -> list[list[int]]:
    """ "200,200;100,100" -> [[200, 200], [100, 100]]: hidden widths per stochastic layer, bottom first.

    One group (no ';') is used for all ``layers``; an empty group means no hidden layer (a linear conditional).
    """
    groups = []
    for part in str(text).split(";"):
        try:
            widths = [int(w) for w in part.split(",")] if part.strip() else []
        except ValueError:
            widths = [0]
        if widths and min(widths) < 1:
            raise ValueError(f"hidden must be comma-separated positive widths per layer, ';' between layers, such as "
                             f"200,200;100,100, got {text!r}")
        groups.append(widths)
    if len(groups) == 1:
        groups = groups * layers
    if len(groups) != layers:
        raise ValueError(f"hidden has {len(groups)} groups of widths ({text!r}), but the model has {layers} stochastic "
                         f"layers: give one group per layer, bottom first, or one group for all")
    return groups


def mlp(fan_in: int, widths: list[int], fan_out: int, act: str) -> nn.Sequential:
    """[Linear -> act] per hidden width, then Linear(fan_out): [M, fan_in] -> [M, fan_out]."""
    layers: list[nn.Module] = []
    for a, b in zip([fan_in, *widths], widths):
        layers += [nn.Linear(a, b), activation(act)]
    return nn.Sequential(*layers, nn.Linear(([fan_in, *widths])[-1], fan_out))


class GaussianLayer(nn.Module):
    """p(z_l | z_{l+1}) = N(mean(h), diag(exp(log_std(h))^2)), h = trunk(z_{l+1}) (Burda et al.'s GaussianSampler)."""

    def __init__(self, fan_in: int, widths: list[int], size: int, act: str):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([fan_in, *widths], widths):
            layers += [nn.Linear(a, b), activation(act)]
        self.trunk = nn.Sequential(*layers)  # [M, fan_in] -> [M, h] (empty: h = z_{l+1})
        width = ([fan_in, *widths])[-1]
        self.mean = nn.Linear(width, size)
        self.log_std = nn.Linear(width, size)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:  # [M, K_{l+1}] -> [M, K_l], [M, K_l]
        h = self.trunk(z)
        return self.mean(h), self.log_std(h)


class BottomDecoder(nn.Module):
    """p(x|z_1)'s network on the whole z [M, K_1 + ... + K_L]: it reads z_1, the first K_1 columns."""

    def __init__(self, net: nn.Module, k1: int):
        super().__init__()
        self.net, self.k1 = net, k1

    def forward(self, z: Tensor) -> Tensor:  # [M, K] -> [M, C, H, W]
        return self.net(z[:, : self.k1])


def _run(net: nn.Module, z: Tensor) -> Any:
    """``net`` on latents [..., K_in] of any dtype (float64 in the evaluator): the net's own dtype inside, z's outside."""
    p = next(net.parameters())
    out = net(z.reshape(-1, z.shape[-1]).to(p.dtype))
    if isinstance(out, tuple):
        return tuple(o.to(z.dtype).reshape(*z.shape[:-1], o.shape[-1]) for o in out)
    return out.to(z.dtype).reshape(*z.shape[:-1], out.shape[-1])


class HierarchicalVAE(VAE):
    """A VAE with L >= 2 stochastic layers z_1 (bottom) ... z_L (top); see the module's docstring for the interface.

    Args:
        encoder: images [B, C, H, W] -> q(z_1|x)'s parameters [B, P_1].
        x_decoder: z_1 [M, K_1] -> the likelihood's parameters [M, C, H, W].
        q_nets: L-1 networks, q(z_l|z_{l-1})'s parameters [M, P_l] from z_{l-1} [M, K_{l-1}], l = 2..L.
        p_layers: L-1 ``GaussianLayer``s, p(z_l|z_{l+1}) for l = 1..L-1.
        sizes: [K_1, ..., K_L].
        likelihood, posterior (the form of every q(z_l|.)), image_shape, prior (over z_L): as for ``vaekit.VAE``.
    """

    def __init__(self, encoder: nn.Module, x_decoder: nn.Module, q_nets: list[nn.Module], p_layers: list[GaussianLayer],
                 sizes: list[int], likelihood: Any = "bernoulli", posterior: Any = "diagonal",
                 image_shape: tuple[int, int, int] | None = None, prior: Any = "standard-normal"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1 or len(q_nets) != len(sizes) - 1 or len(p_layers) != len(sizes) - 1:
            raise ValueError(f"a hierarchical VAE needs sizes of L >= 2 layers and L-1 networks each way, got sizes {sizes}, "
                             f"{len(q_nets)} recognition and {len(p_layers)} generative networks")
        prior = make_prior(prior, sizes[-1], image_shape)  # over the top layer z_L
        super().__init__(encoder, BottomDecoder(x_decoder, sizes[0]), sum(sizes), likelihood, posterior, image_shape, prior)
        self.layer_sizes = tuple(sizes)
        self.q_nets = nn.ModuleList(q_nets)
        self.p_layers = nn.ModuleList(p_layers)

    @property
    def K(self) -> int:
        """K_L: the top layer's size, the latent space of the figures, the explorer and the samplers."""
        return self.layer_sizes[-1]

    @property
    def num_params(self) -> int:
        """P_1: the encoder's output size, q(z_1|x)'s parameters."""
        return self.posterior.num_params(self.layer_sizes[0])

    def layers(self, z: Tensor) -> list[Tensor]:
        """z [..., K_1 + ... + K_L] -> [z_1, ..., z_L], each [..., K_l]."""
        return list(z.split(self.layer_sizes, dim=-1))

    def _q_given(self, net: nn.Module, below: Tensor) -> Tensor:
        """q(z_l|z_{l-1})'s parameters [B, k, P_l] for z_{l-1} [B, k, K_{l-1}]."""
        return _run(net, below)

    def rsample_z(self, phi: Tensor, k: int, eps: Tensor | None = None) -> Tensor:
        """z ~ q(z|x) by the chain z_1 ~ q(z_1|x), z_l ~ q(z_l|z_{l-1}): [B, k, K]; ``eps`` [k, B, K] or None."""
        b = phi.shape[0]
        if eps is None:
            eps = torch.randn(k, b, self.latent_dim, dtype=phi.dtype, device=phi.device)  # [k, B, K]
        if not isinstance(eps, Tensor) or tuple(eps.shape) != (k, b, self.latent_dim):
            got = list(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
            raise ValueError(f"eps must have shape [k={k}, B={b}, K={self.latent_dim}] (every layer's noise), got {got}")
        noise = eps.split(self.layer_sizes, dim=-1)  # each [k, B, K_l]
        zs = [self.posterior.rsample(phi, k, noise[0])]  # [B, k, K_1]
        for net, e in zip(self.q_nets, noise[1:]):
            phi_l = self._q_given(net, zs[-1]).reshape(b * k, -1)  # [B*k, P_l]
            e = e.permute(1, 0, 2).reshape(1, b * k, -1)  # [1, B*k, K_l]
            zs.append(self.posterior.rsample(phi_l, 1, e).reshape(b, k, -1))  # [B, k, K_l]
        return torch.cat(zs, dim=-1)  # [B, k, K]

    def log_q(self, z: Tensor, phi: Tensor) -> Tensor:
        """log q(z|x) = log q(z_1|x) + sum_{l>=2} log q(z_l|z_{l-1}) [B, k], in nats."""
        zs = self.layers(z)
        b, k = z.shape[:2]
        total = self.posterior.log_prob(zs[0], phi)  # [B, k]
        for net, below, zl in zip(self.q_nets, zs[:-1], zs[1:]):
            phi_l = self._q_given(net, below).reshape(b * k, -1)  # [B*k, P_l]
            total = total + self.posterior.log_prob(zl.reshape(b * k, 1, -1), phi_l).reshape(b, k)
        return total

    def log_p_z(self, z: Tensor) -> Tensor:
        """log p(z) = log p(z_L) + sum_{l<L} log p(z_l|z_{l+1}) [B, k], in nats (exact)."""
        zs = self.layers(z)
        total = self.prior.log_prob(zs[-1], self)  # [B, k]
        for layer, zl, above in zip(self.p_layers, zs[:-1], zs[1:]):
            mu, log_sig = _run(layer, above)  # [B, k, K_l] each
            total = total + log_prob_diag(zl, mu, log_sig)
        return total

    def kl(self, phi: Tensor) -> None:
        """None: no closed form; the objectives estimate KL(q || p) on their samples."""
        return None

    @torch.no_grad()
    def sample_z(self, n: int) -> Tensor:
        """Ancestral draws z_L ~ p(z_L), z_l ~ p(z_l|z_{l+1}): [n, K] from the global RNG."""
        zs = [self.prior.sample(n, self)]  # [n, K_L]
        for layer in reversed(self.p_layers):
            mu, log_sig = _run(layer, zs[0])
            zs.insert(0, mu + log_sig.exp() * torch.randn_like(mu))  # [n, K_l]
        return torch.cat(zs, dim=-1)

    def top_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z_L|x) along the mean path mu_1(x), mu_l(mu_{l-1}): means [B, K_L] and log stds [B, K_L] or [B, 1]."""
        mu, log_sig = self.posterior.split(self.encode(x))
        for net in self.q_nets:
            mu, log_sig = self.posterior.split(_run(net, mu))
        return mu, log_sig

    @property
    def explorer_decoder(self) -> nn.Sequential:
        """z_L [M, K_L] -> the likelihood's parameters [M, C, H, W] down the means of p(z_l|z_{l+1}), in plain layers."""
        layers: list[nn.Module] = []
        for layer in reversed(self.p_layers):
            layers += [*layer.trunk, layer.mean]
        return nn.Sequential(*layers, *self.decoder.net)

    def mean_image(self, samples_z: Tensor) -> Tensor:
        """E[x|z] [B, N, C, H, W] for latents [B, N, K] (from z_1), or for top-layer latents [B, N, K_L], decoded down
        the mean path (the figures' and samplers' latent space)."""
        if not isinstance(samples_z, Tensor) or samples_z.ndim != 3 or samples_z.shape[-1] not in (self.latent_dim, self.K):
            got = list(samples_z.shape) if isinstance(samples_z, Tensor) else type(samples_z).__name__
            raise ValueError(f"latents must have shape [B, N, K={self.latent_dim}] (every layer) or [B, N, K_L={self.K}] "
                             f"(the top layer), got {got}")
        if samples_z.shape[-1] == self.latent_dim:
            return super().mean_image(samples_z)
        b, n, k = samples_z.shape
        out = self.explorer_decoder(samples_z.reshape(b * n, k))  # [B*N, C, H, W]
        return self.likelihood.mean(out.reshape(b, n, *out.shape[1:]))

    def forward(self, x: Tensor, n: int = 1) -> Tensor:
        """Mean reconstructions [B, N, C, H, W] of x through n samples of z ~ q(z|x) (decoded from z_1)."""
        return self.mean_image(self.rsample_z(self.encode(x), n))

    def latent_summary(self, x: Tensor, samples: int = 8) -> tuple[Tensor, Tensor]:
        """For ``evaluation.latent_stats``: the mean path's means [B, K] (every layer) and each dimension's
        E_q[log q(z_d|.) - log p(z_d|.)] [B, K] on ``samples`` draws (seeded), the top layer against N(0, I)."""
        return latent_summary(self, x, samples)


def _log_normal(z: Tensor, mu: Tensor, log_sig: Tensor) -> Tensor:
    """log N(z_d; mu_d, sigma_d^2) per dimension [..., K], in nats."""
    return -0.5 * LOG_2PI - log_sig - 0.5 * (z - mu).pow(2) * torch.exp(-2.0 * log_sig)


@torch.no_grad()
def latent_summary(model: HierarchicalVAE, x: Tensor, samples: int = 8) -> tuple[Tensor, Tensor]:
    """The mean path's means [B, K] and per-dimension KL estimates [B, K] (float64), see ``latent_summary``."""
    phi = model.encode(x)
    mu, log_sig = model.posterior.split(phi)
    means = [mu]
    for net in model.q_nets:
        mu, _ = model.posterior.split(_run(net, means[-1]))
        means.append(mu)
    gen = torch.Generator(device=phi.device).manual_seed(0)
    b = phi.shape[0]
    eps = torch.randn(samples, b, model.latent_dim, generator=gen, device=phi.device, dtype=phi.dtype)
    zs = model.layers(model.rsample_z(phi, samples, eps).double())  # each [B, S, K_l]
    phi64 = phi.double()
    terms = []
    for i, zl in enumerate(zs):  # layer i + 1: log q(z_l|z_{l-1}) per dimension
        q = phi64[:, None, :] if i == 0 else _run(model.q_nets[i - 1], zs[i - 1])  # [B, 1 or S, P_l]
        q_mu, q_ls = model.posterior.split(q.reshape(-1, q.shape[-1]))
        log_q = _log_normal(zl, q_mu.reshape(b, -1, zl.shape[-1]), q_ls.reshape(b, q.shape[1], -1))
        if i + 1 < len(zs):
            p_mu, p_ls = _run(model.p_layers[i], zs[i + 1])
        else:
            p_mu, p_ls = torch.zeros_like(zl), torch.zeros_like(zl)  # the top layer against N(0, I)
        terms.append((log_q - _log_normal(zl, p_mu, p_ls)).mean(dim=1))  # [B, K_l]
    return torch.cat(means, dim=-1), torch.cat(terms, dim=-1)


@ARCHITECTURES.register
class Hierarchical(Architecture):
    """hvae: L stochastic layers (Burda et al. 2016); --latent-dim is the top's size, --lower-layers the ones below"""

    name = "hvae"

    @dataclass
    class Options:
        lower_layers: str = option("100", "hvae: sizes of the stochastic layers below the top, bottom first (z_1, ..., "
                                   "z_{L-1}); the top layer z_L has --latent-dim units")
        hidden: str = option("200,200;100,100", "hidden widths of each stochastic layer's networks, bottom first, ';' "
                             "between layers (one group: every layer); the generative networks mirror them")
        activation: str = option("tanh", "hidden activation", choices=tuple(ACTIVATIONS))

    def sizes_and_groups(self, latent_dim: int) -> tuple[list[int], list[list[int]]]:
        sizes = [*parse_sizes(self.options.lower_layers), latent_dim]
        return sizes, parse_hidden_groups(self.options.hidden, len(sizes))

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        """The networks between x and the bottom layer (of ``latent_dim`` units): encoder and p(x|z_1)'s decoder."""
        c, h, w = image_shape
        widths = self.sizes_and_groups(latent_dim)[1][0]
        encoder = nn.Sequential(nn.Flatten(), *mlp(c * h * w, widths, num_params, self.options.activation))  # [B, P]
        decoder = nn.Sequential(*mlp(latent_dim, widths[::-1], c * h * w, self.options.activation), nn.Unflatten(1, (c, h, w)))
        return encoder, decoder

    def build_model(self, image_shape: tuple[int, int, int], latent_dim: int, likelihood: Any, posterior: Any,
                    prior: Any) -> HierarchicalVAE:
        sizes, groups = self.sizes_and_groups(latent_dim)
        act = self.options.activation
        encoder, x_decoder = self.build(image_shape, sizes[0], posterior.num_params(sizes[0]))
        q_nets = [mlp(sizes[i - 1], groups[i], posterior.num_params(sizes[i]), act) for i in range(1, len(sizes))]
        p_layers = [GaussianLayer(sizes[i + 1], groups[i + 1][::-1], sizes[i], act) for i in range(len(sizes) - 1)]
        return HierarchicalVAE(encoder, x_decoder, q_nets, p_layers, sizes, likelihood, posterior, image_shape, prior)
