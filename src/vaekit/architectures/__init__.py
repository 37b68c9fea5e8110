"""Encoder/decoder networks, one file each, found by name in ``ARCHITECTURES``.

An architecture module defines ``NAME`` and ``build(cfg, image_shape, num_params) ->
(encoder, decoder)``: the encoder maps images [B, C, H, W] to the posterior's parameters
[B, P] (P = ``num_params``), the decoder maps latents [M, K] to outputs [M, C, H, W].
``cfg`` is the run's ``ModelConfig`` (``latent_dim`` and the architecture's own options).
Every module in this package is registered when the package is imported: adding an
architecture is adding one file here (and its test).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "ACTIVATIONS", "build_networks", "count_parameters", "flops_per_image", "activation"]

#: name -> build(cfg, image_shape, num_params) -> (encoder, decoder)
ARCHITECTURES: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {}

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    ARCHITECTURES[_module.NAME] = _module.build


def build_networks(cfg: Any, image_shape: tuple[int, int, int], num_params: int) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder that ``cfg.arch`` names, for images of shape [C, H, W]."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(sorted(ARCHITECTURES))}, got {cfg.arch!r}")
    c, h, w = image_shape
    if min(c, h, w) < 1:
        raise ValueError(f"image shape must be [C, H, W] with positive sizes, got {list(image_shape)}")
    return ARCHITECTURES[cfg.arch](cfg, (c, h, w), num_params)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def flops_per_image(module: nn.Module, example: torch.Tensor) -> int:
    """Floating-point operations of one forward pass of ``module`` on ``example`` (one item):
    2 x the multiply-adds of its Linear, Conv2d and ConvTranspose2d layers (activations not counted)."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features * (out.numel() // m.out_features)
        elif isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += 2 * k * out.numel()  # one k-long dot product per output element
        elif isinstance(m, nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.out_channels // m.groups)
            total += 2 * k * inputs[0].numel()  # every input element is scattered through a kernel

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    was_training = module.training
    try:
        module.eval()
        p = next(module.parameters(), None)
        module(example.to(p.device if p is not None else "cpu", p.dtype if p is not None else torch.float32))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total
