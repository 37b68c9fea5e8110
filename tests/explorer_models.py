"""Stand-in models for the explorer tests: any nn.Module with .decoder, .K and .likelihood.

``stand_in(kind, K, C, H, W, likelihood)`` builds one. The architectures registered in
vaekit can replace these helpers (``assignment``, ``mlp``, ``conv``) without touching the tests.
"""

from __future__ import annotations

import torch
from torch import nn


class Likelihood:
    """A likelihood given as an object with ``.name`` (as the model refactor does)."""

    def __init__(self, name: str):
        self.name = name


class MySequential(nn.Sequential):
    """A user's subclass of nn.Sequential (the explorer walks its children in order)."""


class StandIn(nn.Module):
    def __init__(self, decoder: nn.Module, K: int, likelihood):
        super().__init__()
        self.decoder = decoder
        self.K = K
        self.likelihood = likelihood


def mlp_decoder(K: int, C: int, H: int, W: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(K, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, C * H * W), nn.Unflatten(1, (C, H, W)),
    )


def conv_decoder(K: int, C: int, H: int, W: int) -> nn.Module:
    """Linear -> Unflatten -> ReLU -> strided ConvTranspose2d ... -> C channels of H x W (32x32 or 25x25 here)."""
    if (H, W) == (32, 32):  # 4 -> 8 -> 16 -> 32 with output_padding 1, and a Conv2d and SiLU on the way
        return nn.Sequential(
            nn.Linear(K, 64 * 4 * 4), nn.Unflatten(1, (64, 4, 4)), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            MySequential(nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.SiLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.ConvTranspose2d(16, C, 3, stride=2, padding=1, output_padding=1),
        )
    if (H, W) == (25, 25):  # 7 -> 13 -> 25 with output_padding 0, a strided Conv2d, ELU, Flatten/Unflatten
        return MySequential(
            nn.Linear(K, 32 * 7 * 7), nn.Unflatten(1, (32, 7, 7)), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=0), nn.ELU(),
            nn.Conv2d(16, 16, 3, stride=1, padding=1), nn.Identity(), nn.ReLU(),
            nn.Flatten(), nn.Unflatten(1, (16, 13, 13)),
            nn.ConvTranspose2d(16, C, 3, stride=2, padding=1, output_padding=0),
        )
    raise ValueError(f"no conv stand-in for {H}x{W}")


def stand_in(kind: str, K: int = 2, C: int = 1, H: int = 28, W: int = 28, likelihood="gaussian", seed: int = 0) -> nn.Module:
    """A model for the explorer: ``kind`` "assignment" (SimpleVAE), "assignment-perturbed", "mlp" or "conv"
    (a user's own decoders of those kinds), or "arch:NAME" (vaekit's registered architecture NAME)."""
    torch.manual_seed(seed)
    if kind.startswith("arch:"):
        from vaekit.architectures import ARCHITECTURES
        from vaekit.config import ModelConfig
        from vaekit.model import build_model

        name = likelihood if isinstance(likelihood, str) else likelihood.name
        options = ARCHITECTURES.pick_options(kind[5:], {"num_filters": 8})
        return build_model(ModelConfig(arch=kind[5:], latent_dim=K, likelihood=name, options=options), (C, H, W))
    if kind.startswith("assignment"):
        from vaekit import SimpleVAE

        model = SimpleVAE(K=K)
        if kind == "assignment-perturbed":  # a few steps away from the initialization, as after brief training
            with torch.no_grad():
                for p in model.decoder.parameters():
                    p.add_(0.3 * p.abs().mean() * torch.randn_like(p))
        model.likelihood = likelihood
        return model
    decoder = mlp_decoder(K, C, H, W) if kind == "mlp" else conv_decoder(K, C, H, W)
    return StandIn(decoder, K, likelihood)


@torch.no_grad()
def torch_mean_image(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """E[x|z] from torch itself: the decoder in float32, then the likelihood's mean (float64)."""
    out = model.decoder(z.float()).double()
    lik = model.likelihood if isinstance(model.likelihood, str) else model.likelihood.name
    if lik == "bernoulli":
        return torch.sigmoid(out)
    if lik == "continuous-bernoulli":
        return torch.distributions.ContinuousBernoulli(logits=out).mean
    return out
