"""The VampPrior (Tomczak & Welling 2018): p(z) = 1/C sum_c q(z|u_c), a mixture of the model's own posteriors at C
learned pseudo-inputs u_c, its parameters saved with the model (``prior.pseudo``).

    p_lambda(z) = 1/C sum_{c=1..C} q_phi(z | u_c)    (Tomczak & Welling 2018, eq. 9)

log p(z) is exact (a logsumexp over the C Gaussians, in float64), so the importance-sampled log-likelihood stays
exact; there is no closed-form KL (the objectives estimate it on their samples).

**Pseudo-inputs, as in Tomczak & Welling's code** (jmtomczak/vae_vampprior, ``Model.add_pseudoinputs``): u_c =
hardtanh_[0,1](w_c), the free parameters w [C, C_img, H, W] drawn from N(0.05, 0.01^2) (``load_data`` sets
``pseudoinputs_mean = 0.05``, ``pseudoinputs_std = 0.01`` unless the pseudo-inputs start from training images,
``--use_training_data_init``: here ``init_from_images``). A pixel pushed outside [0, 1] is clipped and gets no
gradient there, as in theirs.

**q(z|u)**: for the one-layer VAE, the posterior at the encoder's output for u; for a model with several stochastic
layers (``--arch hvae``), the prior is over the top layer z_L and q(z_L|u) is the model's ``top_posterior``: the top
layer's Gaussian along the mean path mu_1(u), mu_2(mu_1), ... (Tomczak & Welling's two-layer models infer z_2 from x
directly, so this is their prior for a bottom-up hierarchy; still an exact mixture of Gaussians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import option
from . import PRIORS, Prior

INIT_MEAN, INIT_STD = 0.05, 0.01  # Tomczak & Welling's pseudo-input initialisation (vae_vampprior, load_data.py)
CHUNK = 1 << 22  # entries of one [rows, C] block of component log-densities (32 MB in float64)


@PRIORS.register
class VampPrior(Prior):
    """vamp: the VampPrior, a mixture of the posteriors at --pseudo-inputs C learned pseudo-inputs (Tomczak & Welling 2018)"""

    name = "vamp"
    uses_encoder = True

    @dataclass
    class Options:
        pseudo_inputs: int = option(500, "VampPrior: learned pseudo-inputs, the mixture's components (Tomczak & Welling: 500)", min=1)

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int] | None = None, options: object | None = None):
        super().__init__(latent_dim, image_shape, options)
        if image_shape is None:
            raise ValueError("prior vamp needs the image shape [C, H, W]: its pseudo-inputs are images")
        self.pseudo = nn.Parameter(torch.empty(self.options.pseudo_inputs, *image_shape).normal_(INIT_MEAN, INIT_STD))
        self._cache: tuple[Any, list[Tensor], tuple[Tensor, Tensor]] | None = None  # (key, the weights, components)

    def pseudo_inputs(self) -> Tensor:
        """u = hardtanh_[0,1](w): [C, C_img, H, W]."""
        return F.hardtanh(self.pseudo, 0.0, 1.0)

    @torch.no_grad()
    def init_from_images(self, images: Tensor, std: float = INIT_STD) -> None:
        """Start the pseudo-inputs at the first C of ``images`` [N, C_img, H, W] in [0, 1] plus N(0, std^2) noise
        (Tomczak & Welling's ``--use_training_data_init``)."""
        c = self.pseudo.shape[0]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.pseudo.shape[1:]) or images.shape[0] < c:
            raise ValueError(f"images must have shape [N >= {c}, {', '.join(map(str, self.pseudo.shape[1:]))}], got {list(images.shape)}")
        init = images[:c].to(self.pseudo.device, self.pseudo.dtype)
        self.pseudo.copy_(init + std * torch.randn_like(init))

    def components(self, model: Any) -> tuple[Tensor, Tensor]:
        """The mixture's Gaussians q(z|u_c): means [C, K] and log stds [C, K] or [C, 1].

        Without gradients (evaluation) they are computed once and reused while the model's parameters keep the values
        they had then, compared by value with a copy: a parameter's version counter is not enough, since fused
        optimizers (``torch.optim.Adam(fused=True)``, the trainer's) update weights without bumping it."""
        if torch.is_grad_enabled():
            return self._components(model)
        params = [p.detach() for p in model.parameters()]
        key = (tuple((id(p), p.dtype, p.device, tuple(p.shape)) for p in model.parameters()),
               torch.is_autocast_enabled(params[0].device.type))
        if self._cache is None or self._cache[0] != key or not all(torch.equal(a, b) for a, b in zip(self._cache[1], params)):
            self._cache = (key, [p.clone() for p in params], self._components(model))
        return self._cache[2]

    def _components(self, model: Any) -> tuple[Tensor, Tensor]:
        u = self.pseudo_inputs()
        top = getattr(model, "top_posterior", None)  # a model with several stochastic layers: q(z_L|u)
        if top is not None:
            return top(u)
        return model.posterior.split(model.encode(u))

    def log_prob(self, z: Tensor, model: Any) -> Tensor:
        """log 1/C sum_c N(z; mu_c, diag(sigma_c^2)) [B, N] for z [B, N, K], in nats, summed in float64 (logsumexp)."""
        mu, log_sig = self.components(model)
        mu = mu.double()  # [C, K]
        log_sig = log_sig.double().expand_as(mu)  # [C, K]
        inv_var = torch.exp(-2.0 * log_sig)  # [C, K]
        c, k = mu.shape
        # log N(z; mu_c, s_c^2) = -1/2 sum_d z_d^2/s_cd^2 + sum_d z_d mu_cd/s_cd^2 + const_c, as two matrix products
        const = -0.5 * (mu.pow(2) * inv_var).sum(1) - log_sig.sum(1) - 0.5 * k * math.log(2 * math.pi) - math.log(c)  # [C]
        flat = z.reshape(-1, k).double()  # [M, K]
        rows = max(1, CHUNK // c)
        out = []
        for start in range(0, flat.shape[0], rows):
            zc = flat[start : start + rows]  # [m, K]
            log_comp = -0.5 * zc.pow(2) @ inv_var.T + zc @ (mu * inv_var).T + const  # [m, C]
            out.append(torch.logsumexp(log_comp, dim=1))  # [m]
        return torch.cat(out).reshape(z.shape[:-1]).to(z.dtype)  # [B, N]

    @torch.no_grad()
    def sample(self, n: int, model: Any) -> Tensor:
        """z ~ p(z): a component c uniformly, then z ~ q(z|u_c); [n, K] from the global RNG."""
        mu, log_sig = self.components(model)
        p = next(model.parameters())
        c = torch.randint(mu.shape[0], (n,), device=mu.device)
        eps = torch.randn(n, mu.shape[1], device=mu.device, dtype=mu.dtype)
        return (mu[c] + eps * log_sig.expand_as(mu)[c].exp()).to(p.dtype)  # [n, K]

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, pseudo_inputs={self.pseudo.shape[0]}"
