"""The VQ-VAE (van den Oord et al. 2017): a conv encoder to a grid of D-dim vectors, each replaced by its
nearest entry of a codebook of M vectors, and a conv decoder from the grid of code vectors.

``--arch vqvae`` builds a ``VQVAE``, which implements the latent-variable interface of ``vaekit.model``
with z = the code vectors of the h x w grid, flattened as [D, h, w] (K = D h w):

* q(z|x) is one-hot: a point mass on the nearest codes of the encoder's output z_e(x) (``encode`` returns
  z_e, flattened); ``rsample_z`` returns those code vectors, with the straight-through gradient
  (z_e + sg[z_q - z_e], eq. 3), and ``log_q`` = 0 (a probability, the codes are discrete);
* p(z) during training is uniform over the M^(h w) code grids: ``log_p_z`` = -h w log M and
  ``kl`` = KL(one-hot || uniform) = h w log M, a constant (sec. 3.1), so the ELBO
  log p(x|z_q) - h w log M is an honest lower bound on log p(x) under that prior. A prior fitted to the
  frozen encoder's codes afterwards (``vaekit sample --sampler vq-prior``) replaces it for sampling and for
  the bits/dim of the data (``vaekit.samplers.vq_prior``).

The codebook (``Codebook``) learns by the codebook loss ||sg[z_e] - e||^2 (the ``vqvae`` objective), or
with ``--ema`` by exponential moving averages of the vectors assigned to each code (appendix A.1). With
``--restart-dead`` a code that the batches stopped choosing (an EMA of its assignments per step below
``DEAD_USAGE``) is moved onto a random encoder output of the current batch (Dhariwal et al. 2020, Jukebox);
at the first step every code is dead, so the codebook starts on the data. Both updates happen during
training steps only (``model.training``), under ``torch.no_grad()``, when the objective calls
``update_codebook``, like BatchNorm's running statistics; their state is in the model's buffers, so
checkpoints and resumes keep it.

Networks (plain layers the report's in-page decoder can run): the encoder is ``downsample`` x
[Conv2d(3x3, stride 2) -> ReLU], Conv2d(3x3) -> ReLU, Conv2d(1x1) to D channels; the decoder mirrors it,
Unflatten -> Conv2d(3x3) -> ReLU, then ``downsample`` ConvTranspose2d(3x3, stride 2) whose output_padding
restores each side exactly (28 -> 14 -> 7 -> 14 -> 28).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..likelihoods import Likelihood, make_likelihood
from ..registry import option
from . import ARCHITECTURES, Architecture, check_images
from .conv import sides

__all__ = ["VQVAEArch", "VQVAE", "Codebook", "build_vq_networks", "perplexity", "DEAD_USAGE"]

#: a code is dead when the EMA (decay ``USAGE_DECAY``) of its assignments per training step falls below this
DEAD_USAGE = 0.01
USAGE_DECAY = 0.99
EMA_EPS = 1e-5  # Laplace smoothing of the EMA cluster sizes


def perplexity(codes: Tensor, size: int) -> Tensor:
    """exp(entropy) of the code frequencies in ``codes`` (any shape, values in [0, size)): between 1 (one code
    used) and ``size`` (all used equally often). A scalar, in the codes' device, float32."""
    counts = torch.bincount(codes.reshape(-1), minlength=size).float()  # [M]
    p = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class Codebook(nn.Module):
    """M code vectors of size D, the nearest-code lookup, and the training-time updates (EMA, dead-code restarts)."""

    def __init__(self, size: int, dim: int, ema: bool = False, decay: float = 0.99, restart_dead: bool = True):
        super().__init__()
        self.size, self.dim, self.ema, self.decay, self.restart_dead = size, dim, ema, decay, restart_dead
        init = torch.empty(size, dim).uniform_(-1.0 / size, 1.0 / size)  # as in the reference implementations
        if ema:  # no gradient: the averages set it
            self.register_buffer("vectors", init)
            self.register_buffer("ema_count", torch.ones(size))  # [M] N_i
            self.register_buffer("ema_sum", init.clone())  # [M, D] m_i
        else:
            self.vectors = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(size))  # [M] EMA of assignments per step: 0, so all restart at step 1

    def nearest(self, flat: Tensor) -> Tensor:
        """The index of the nearest code [N] for vectors flat [N, D], in their dtype (squared Euclidean distance)."""
        e = self.vectors.detach().to(flat.dtype)  # [M, D]
        with torch.no_grad():
            d2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)  # [N, M]
            return d2.argmin(dim=1)  # [N]

    def lookup(self, codes: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Code vectors [..., D] of the indices ``codes`` [...] (differentiable in the codebook)."""
        e = self.vectors if dtype is None else self.vectors.to(dtype)
        return F.embedding(codes, e)

    @torch.no_grad()
    def update(self, flat: Tensor, codes: Tensor) -> dict[str, float | Tensor]:
        """One training step's updates from the encoder outputs flat [N, D] and their codes [N]: the EMA of the
        assignments (always, for dead codes), the EMA codebook (``ema``), and the restart of dead codes
        (``restart_dead``). Returns {"restarts": the number of codes restarted} (a 0-d tensor).

        Data-parallel: the counts and sums are all-reduced, and restarted vectors come from rank 0, so every
        rank keeps the same codebook."""
        restarts = flat.new_zeros(())
        if flat.device.type == "meta" or flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
            return {"restarts": restarts}  # nothing to learn from (a meta stand-in, an empty shard, a bad batch)
        flat = flat.detach().float()
        one_hot = F.one_hot(codes, self.size).float()  # [N, M]
        counts = distributed.all_reduce_sum(one_hot.sum(0))  # [M] n_i
        self.usage.mul_(USAGE_DECAY).add_(counts, alpha=1 - USAGE_DECAY)
        if self.ema:  # N_i <- g N_i + (1 - g) n_i;  m_i <- g m_i + (1 - g) sum_j z_j;  e_i = m_i / N_i  (appendix A.1)
            sums = distributed.all_reduce_sum(one_hot.T @ flat)  # [M, D]
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + EMA_EPS) / (n + self.size * EMA_EPS) * n  # [M] Laplace-smoothed N_i
            self.vectors.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_dead:
            restarts = self._restart(flat)
        return {"restarts": restarts}

    def _restart(self, flat: Tensor) -> Tensor:
        dead = torch.nonzero(self.usage < DEAD_USAGE).reshape(-1)  # [R]
        if dead.numel() == 0:
            return flat.new_zeros(())
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)  # random encoder outputs of the batch
        new = distributed.broadcast_from_main(flat[pick].contiguous())  # [R, D]
        self.vectors.data[dead] = new.to(self.vectors.dtype)
        if self.ema:
            self.ema_sum[dead] = new
            self.ema_count[dead] = 1.0
        self.usage[dead] = 1.0  # a grace period before it can be restarted again
        return flat.new_tensor(float(dead.numel()))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, ema={self.ema}, restart_dead={self.restart_dead}"


class _OneHot:
    """q(z|x) of a VQ-VAE, for code that reads ``model.posterior``: a point mass on the nearest codes of phi = z_e."""

    name = "one-hot"

    def __init__(self, model: "VQVAE"):
        self.model = model

    def num_params(self, latent_dim: int) -> int:
        return latent_dim

    def split(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """(the code vectors [B, K], log std -inf [B, 1]): the posterior's mean and its zero spread."""
        zq = self.model.quantize(phi)[0]
        return zq, torch.full_like(zq[:, :1], -math.inf)

    def rsample(self, phi: Tensor, n: int, eps: Tensor | None = None) -> Tensor:
        return self.model.rsample_z(phi, n, eps)

    def log_prob(self, z: Tensor, phi: Tensor) -> Tensor:
        return self.model.log_q(z, phi)


class _UniformCodes:
    """p(z) of a VQ-VAE in training: uniform over the M^(h w) grids of codes."""

    name = "uniform-codes"

    def __init__(self, model: "VQVAE"):
        self.model = model

    def log_prob(self, z: Tensor, model: Any = None) -> Tensor:
        return self.model.log_p_z(z)

    def sample(self, n: int, model: Any = None) -> Tensor:
        return self.model.sample_z(n)


class VQVAE(nn.Module):
    """A VQ-VAE: encoder [B, C, H, W] -> z_e [B, D, h, w], codebook of M vectors, decoder [M', D h w] -> [M', C, H, W].

    Implements the latent-variable interface of ``vaekit.model`` (see the module docstring), with
    ``deterministic_posterior`` = True: every sample of z is the same, so one importance sample is exact.
    """

    deterministic_posterior = True

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, codebook: Codebook, grid: tuple[int, int],
        likelihood: str | Likelihood = "gaussian", image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        self.encoder, self.decoder, self.codebook = encoder, decoder, codebook
        self.grid = (int(grid[0]), int(grid[1]))
        self.code_dim, self.codebook_size = codebook.dim, codebook.size
        self.latent_dim = self.code_dim * self.grid[0] * self.grid[1]
        self.likelihood = make_likelihood(likelihood)
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.log_sig_x = nn.Parameter(torch.zeros(()), requires_grad=self.likelihood.has_scale)

    @property
    def K(self) -> int:
        return self.latent_dim

    @property
    def num_params(self) -> int:
        return self.latent_dim

    @property
    def positions(self) -> int:
        """h w: the codes per image."""
        return self.grid[0] * self.grid[1]

    @property
    def posterior(self) -> _OneHot:
        return _OneHot(self)

    @property
    def prior(self) -> _UniformCodes:
        return _UniformCodes(self)

    def encode(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> z_e(x) flattened [B, K] (K = D h w, channel-major as [D, h, w])."""
        check_images(x, self.image_shape)
        return self.encoder(x).flatten(1)  # [B, D*h*w]

    def quantize(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """(the nearest code vectors z_q [B, K], no gradient; their indices [B, h w]) for z_e flattened [B, K]."""
        b = phi.shape[0]
        flat = phi.reshape(b, self.code_dim, self.positions).transpose(1, 2).reshape(-1, self.code_dim)  # [B*h*w, D]
        codes = self.codebook.nearest(flat).reshape(b, self.positions)  # [B, h*w]
        return self.code_vectors(codes, phi.dtype).detach(), codes

    def code_vectors(self, codes: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """z [B, K] for code indices [B, h w] or [B, h, w] (differentiable in the codebook)."""
        b = codes.shape[0]
        e = self.codebook.lookup(codes.reshape(b, self.positions), dtype)  # [B, h*w, D]
        return e.transpose(1, 2).reshape(b, self.latent_dim)  # [B, D*h*w]

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The code grid [B, h, w] (int64) of images x [B, C, H, W]."""
        return self.quantize(self.encode(x))[1].reshape(-1, *self.grid)

    def rsample_z(self, phi: Tensor, k: int, eps: Tensor | None = None) -> Tensor:
        """The code vectors of z_e = phi, k times [B, k, K] (``eps`` is not used: q is a point mass); with a
        gradient, the straight-through estimator z_e + sg[z_q - z_e] (eq. 3)."""
        zq = self.quantize(phi)[0]
        if torch.is_grad_enabled() and phi.requires_grad:
            zq = phi + (zq - phi).detach()
        return zq[:, None, :].expand(phi.shape[0], k, self.latent_dim)

    def log_q(self, z: Tensor, phi: Tensor) -> Tensor:
        """log q(z|x) = 0 [B, k]: z is always the nearest codes of phi, which q chooses with probability 1."""
        return z.new_zeros(z.shape[:2])

    def log_p_z(self, z: Tensor) -> Tensor:
        """log p(z) = -h w log M [B, k]: the training prior, uniform over the code grids."""
        return z.new_full(z.shape[:2], -self.positions * math.log(self.codebook_size))

    def kl(self, phi: Tensor) -> Tensor:
        """KL(one-hot || uniform) = h w log M per image [B] (van den Oord et al. 2017, sec. 3.1)."""
        return phi.new_full(phi.shape[:1], self.positions * math.log(self.codebook_size))

    @torch.no_grad()
    def sample_z(self, n: int) -> Tensor:
        """n draws from the uniform prior [n, K]: h w codes each, uniform over the M, from the global RNG."""
        codes = torch.randint(0, self.codebook_size, (n, self.positions), device=self.log_sig_x.device)
        return self.code_vectors(codes, self.log_sig_x.dtype)

    def decode(self, samples_z: Tensor) -> Tensor:
        """Latents [B, N, K] -> decoder outputs [B, N, C, H, W]."""
        if not isinstance(samples_z, Tensor) or samples_z.ndim != 3 or samples_z.shape[-1] != self.latent_dim:
            got = list(samples_z.shape) if isinstance(samples_z, Tensor) else type(samples_z).__name__
            raise ValueError(f"samples_z must have shape [B, N, K={self.latent_dim}], got {got}")
        b, n, k = samples_z.shape
        out = self.decoder(samples_z.reshape(b * n, k))  # [B*N, C, H, W]
        return out.reshape(b, n, *out.shape[1:])

    def mean_image(self, samples_z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decode(samples_z))

    def codebook_losses(self, phi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(codebook loss ||sg[z_e] - e||^2 [B], commitment loss ||z_e - sg[e]||^2 [B], codes [B, h w]), each
        squared distance summed over the image's h w D numbers (eq. 3); the first has a gradient only without EMA."""
        _, codes = self.quantize(phi)
        e = self.code_vectors(codes, phi.dtype)  # [B, K], differentiable in the codebook
        return (phi.detach() - e).pow(2).sum(1), (phi - e.detach()).pow(2).sum(1), codes

    def update_codebook(self, phi: Tensor, codes: Tensor) -> dict[str, Any]:
        """The training step's codebook updates (``Codebook.update``), in training mode only."""
        if not self.training:
            return {"restarts": phi.new_zeros(())}
        flat = phi.detach().reshape(-1, self.code_dim, self.positions).transpose(1, 2).reshape(-1, self.code_dim)
        return self.codebook.update(flat, codes.reshape(-1))

    def latent_stats(self, images: Any, batch_size: int = 500) -> dict[str, Any]:
        """``vaekit.evaluate``'s latent diagnostics of a VQ-VAE: the reconstruction MSE per pixel (from the codes),
        the codebook perplexity of these images' codes and how many of the M codes they use."""
        from ..data import to_float

        p = self.log_sig_x
        all_codes, sq_err = [], 0.0
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, images.shape[0], batch_size):
                    x = to_float(images[start : start + batch_size]).to(p.device, p.dtype)  # [b, C, H, W]
                    zq, codes = self.quantize(self.encode(x))
                    sq_err += (self.mean_image(zq[:, None, :])[:, 0].double() - x.double()).pow(2).sum().item()
                    all_codes.append(codes.cpu())
        finally:
            self.train(was)
        codes = torch.cat(all_codes)  # [M', h*w]
        return {
            "recon_mse": sq_err / images[0].numel() / images.shape[0],
            "codebook_perplexity": float(perplexity(codes, self.codebook_size)),
            "codes_used": int(torch.unique(codes).numel()),
            "codebook_size": self.codebook_size,
            "code_grid": list(self.grid),
        }


def build_vq_networks(image_shape: tuple[int, int, int], code_dim: int, f: int, downsample: int) -> tuple[nn.Module, nn.Module, tuple[int, int]]:
    """(encoder [B, C, H, W] -> [B, D*h*w], decoder [M, D*h*w] -> [M, C, H, W], (h, w)); a ValueError naming the
    shape if ``downsample`` halvings leave a side under 2."""
    c, h, w = image_shape
    hs, ws = sides(h, downsample), sides(w, downsample)
    if min(hs[-1], ws[-1]) < 2:
        smallest = 2**downsample + 1
        raise ValueError(
            f"arch vqvae with downsample {downsample} halves the image {downsample} times and needs at least "
            f"{smallest}x{smallest} pixels, got {h}x{w}; lower --downsample"
        )
    enc: list[nn.Module] = []
    for cin in [c] + [f] * (downsample - 1):
        enc += [nn.Conv2d(cin, f, 3, stride=2, padding=1), nn.ReLU()]  # [B, F, ceil(h/2), ceil(w/2)]
    enc += [nn.Conv2d(f, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, code_dim, 1), nn.Flatten()]  # [B, D*h*w]
    dec: list[nn.Module] = [nn.Unflatten(1, (code_dim, hs[-1], ws[-1])), nn.Conv2d(code_dim, f, 3, padding=1), nn.ReLU()]
    for i in reversed(range(downsample)):
        pad = (hs[i] - (2 * hs[i + 1] - 1), ws[i] - (2 * ws[i + 1] - 1))  # restores the side before halving i
        dec.append(nn.ConvTranspose2d(f, c if i == 0 else f, 3, stride=2, padding=1, output_padding=pad))
        if i > 0:
            dec.append(nn.ReLU())
    return nn.Sequential(*enc), nn.Sequential(*dec), (hs[-1], ws[-1])


@ARCHITECTURES.register
class VQVAEArch(Architecture):
    """vqvae: VQ-VAE, a grid of --codebook-size codes of size --latent-dim (--ema, --restart-dead; train with --objective vqvae)"""

    name = "vqvae"

    @dataclass
    class Options:
        codebook_size: int = option(512, "codes in the codebook (M)", min=2)
        downsample: int = option(2, "stride-2 convs from the image to the code grid (28x28 -> 7x7 at 2)", min=1)
        num_filters: int = option(32, "channels of the conv layers", min=1)
        ema: bool = option(True, "learn the codebook by exponential moving averages (appendix A.1) instead of the codebook loss")
        ema_decay: float = option(0.99, "decay of the EMA codebook updates", gt=0.0, lt=1.0)
        restart_dead: bool = option(True, "move codes the batches stopped choosing onto random encoder outputs")

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        """The encoder [B, C, H, W] -> z_e [B, D*h*w] and decoder [M, D*h*w] -> [M, C, H, W], D = latent_dim (the code
        vectors' size; P = D h w whatever ``num_params``: the posterior is the model's own)."""
        enc, dec, _ = build_vq_networks(image_shape, latent_dim, self.options.num_filters, self.options.downsample)
        return enc, dec

    def build_model(self, image_shape: tuple[int, int, int], latent_dim: int, likelihood: Any, posterior: Any, prior: Any) -> VQVAE:
        """A ``VQVAE``; ``latent_dim`` is the size D of a code vector. Its posterior (one-hot) and prior (uniform over the
        codes) are its own: any other --posterior or --prior than the defaults is refused in one clear error."""
        for kind, part, default in (("posterior", posterior, "isotropic"), ("prior", prior, "standard-normal")):
            name = getattr(part, "name", part)
            if name != default:
                own = "one-hot: the nearest codes" if kind == "posterior" else "uniform over the codes; vaekit sample --sampler vq-prior fits one"
                raise ValueError(f"arch vqvae has its own {kind} ({own}) and takes no --{kind} {name}; leave --{kind} at its default")
        o = self.options
        enc, dec, grid = build_vq_networks(image_shape, latent_dim, o.num_filters, o.downsample)
        book = Codebook(o.codebook_size, latent_dim, ema=o.ema, decay=o.ema_decay, restart_dead=o.restart_dead)
        return VQVAE(enc, dec, book, grid, likelihood=likelihood, image_shape=image_shape)
