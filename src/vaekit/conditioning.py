"""How a condition reaches a conditional VAE's networks (the conditions themselves: ``vaekit.conditions``).

Any architecture's networks become conditional ones:

* q(z|x, c): its encoder for images with E more channels, fed [x, c as channels] (``ConditionedEncoder``;
  a class is E constant planes, the given quadrants are an image; an MLP flattens them with x);
* p(x|z, c): its decoder for K + S latents, fed [z, c] (``ConditionedDecoder``), so that the explorer
  runs it in the page with c appended to z;
* the likelihood scores only the condition's ``scored`` pixels (``ScoredLikelihood``).

The model keeps the latent-variable interface of ``vaekit.model`` (encode, rsample_z, log_q, log_p_z, kl,
decode): the condition of the images in flight is held while they pass, ``with given(model, x, labels)``,
and the wrapped networks read it. Image b of a batch comes with its n samples of z as decoder rows
b*n..(b+1)*n-1 (``VAE.decode``), each fed image b's c.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .conditions import Condition
from .likelihoods import Likelihood

__all__ = ["ConditionedEncoder", "ConditionedDecoder", "ScoredLikelihood", "conditional_networks", "given", "condition_of"]


def condition_of(model: Any) -> Condition | None:
    """The model's condition (``vaekit.conditions.Condition``), or None for an unconditional model."""
    return getattr(model, "condition", None)


def given(model: Any, x: Tensor, labels: Tensor | None = None) -> Any:
    """A context manager holding the condition of images x [B, C, H, W] (floats in [0, 1]) and their labels [B]
    for a conditional model's networks while its block runs; a no-op for an unconditional model."""
    condition = condition_of(model)
    return contextlib.nullcontext() if condition is None else condition.holding(x, labels)


class ConditionedEncoder(nn.Module):
    """q(z|x, c): ``net`` takes images of C + E channels; it is fed [x, the held c as E channels]."""

    def __init__(self, net: nn.Module, condition: Condition):
        super().__init__()
        self.net = net
        self.condition = condition

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, P]
        c = self.condition.held_rows(x.shape[0]).to(x.device, x.dtype)  # [B, S]
        return self.net(torch.cat([x, self.condition.channels(c)], dim=1))  # [B, C+E, H, W] in


class ConditionedDecoder(nn.Module):
    """p(x|z, c): ``net`` takes latents of K + S; it is fed [z, the held c] (``net`` alone is what the explorer runs)."""

    def __init__(self, net: nn.Module, condition: Condition):
        super().__init__()
        self.net = net
        self.condition = condition

    def forward(self, z: Tensor) -> Tensor:  # [M, K] -> [M, C, H, W]
        c = self.condition.held_rows(z.shape[0]).to(z.device, z.dtype)  # [M, S]
        return self.net(torch.cat([z, c], dim=1))  # [M, K+S] in


class ScoredLikelihood(Likelihood):
    """A likelihood summed over the condition's scored pixels only: log p(x_s|z, c) = sum_{d in s} log p(x_d|z, c)
    (the quadrants: log p(x_missing | z, x_given)); the mean, name and explorer function are the inner one's."""

    def __init__(self, inner: Likelihood, scored: Tensor):
        super().__init__(inner.options)
        self.inner, self.mask = inner, scored.bool()  # [D]
        self.name, self.has_scale, self.discrete = inner.name, inner.has_scale, inner.discrete
        self.explorer_mean_js, self.mean_description = inner.explorer_mean_js, inner.mean_description

    @property
    def scored_dims(self) -> int:
        """How many pixels are scored (D' of bits/dim)."""
        return int(self.mask.sum())

    def _pick(self, t: Tensor) -> Tensor:  # [B, N, D] -> [B, N, D']
        if t.shape[-1] != self.mask.numel():
            raise ValueError(f"the scored likelihood takes [B, N, D={self.mask.numel()}] pixels, got {list(t.shape)}")
        return t[..., self.mask.to(t.device)]

    def log_prob(self, x: Tensor, out: Tensor, log_sig_x: Tensor) -> Tensor:  # [B, N, D] -> [B, N]
        return self.inner.log_prob(self._pick(x), self._pick(out), log_sig_x)

    def mean(self, out: Tensor) -> Tensor:
        return self.inner.mean(out)

    def calibrated_log_sig_x(self, x: Tensor, out: Tensor, batch_mean: Callable[[Tensor], Tensor]) -> Tensor | None:
        return self.inner.calibrated_log_sig_x(self._pick(x), self._pick(out), batch_mean)

    def __repr__(self) -> str:
        return f"ScoredLikelihood({self.inner!r}, {self.scored_dims} of {self.mask.numel()} pixels)"


def conditional_networks(
    condition: Condition, arch: Any, image_shape: tuple[int, int, int], latent_dim: int, num_params: int,
) -> tuple[nn.Module, nn.Module]:
    """The architecture ``arch``'s encoder for images of E more channels and its decoder for K + S latents,
    wrapped to be fed the held condition: (q(z|x, c), p(x|z, c)) for images [C, H, W]."""
    c, h, w = image_shape
    condition.bind((c, h, w))
    encoder, _ = arch.build((c + condition.extra_channels, h, w), latent_dim, num_params)  # [B, C+E, H, W] -> [B, P]
    _, decoder = arch.build((c, h, w), latent_dim + condition.size, num_params)  # [M, K+S] -> [M, C, H, W]
    return ConditionedEncoder(encoder, condition), ConditionedDecoder(decoder, condition)


def conditional_likelihood(likelihood: Likelihood, condition: Condition) -> Likelihood:
    """The likelihood over the condition's scored pixels (``ScoredLikelihood``), or itself where it scores all."""
    scored = condition.scored()
    return likelihood if scored is None else ScoredLikelihood(likelihood, scored)
