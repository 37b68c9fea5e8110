"""Encoder/decoder networks: one file per architecture in this package, each an ``Architecture``
registered in ``ARCHITECTURES`` (``--arch NAME``), with its own ``Options`` (``--hidden``, ``--depth``...).

``Architecture.build(image_shape, latent_dim, num_params) -> (encoder, decoder)``: the encoder
maps images [B, C, H, W] to the posterior's parameters [B, P] (P = ``num_params``), the decoder
maps latents [M, K] to outputs [M, C, H, W]. Adding an architecture is adding one file here
(and its test).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Part, Registry

__all__ = [
    "check_images",
    "Architecture", "ARCHITECTURES", "ACTIVATIONS", "build_networks", "count_parameters", "flops_per_image", "activation",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class Architecture(Part):
    """An encoder and a decoder for images of one shape."""

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        """(encoder: [B, C, H, W] -> [B, num_params], decoder: [M, latent_dim] -> [M, C, H, W]); a ValueError naming
        the shape and what to do if this architecture cannot take these images."""
        raise NotImplementedError

    def build_model(
        self, image_shape: tuple[int, int, int], latent_dim: int, likelihood: Any, posterior: Any, prior: Any,
    ) -> nn.Module | None:
        """A whole model of this architecture's own (several stochastic layers, say), implementing the
        latent-variable interface of ``vaekit.model``; None (the default): a ``vaekit.VAE`` of ``build``'s
        networks and the given parts, which ``vaekit.model.build_model`` makes."""
        return None


ARCHITECTURES: Registry[type[Architecture]] = Registry("arch", Architecture, package=__name__, title="architecture")


def build_networks(
    arch: str, options: dict[str, Any] | None, image_shape: tuple[int, int, int], latent_dim: int, num_params: int,
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of the architecture ``arch`` with ``options``, for images of shape [C, H, W]."""
    c, h, w = image_shape
    if min(c, h, w) < 1:
        raise ValueError(f"image shape must be [C, H, W] with positive sizes, got {list(image_shape)}")
    part = ARCHITECTURES[arch](ARCHITECTURES.options(arch, options))
    return part.build((c, h, w), latent_dim, num_params)


def check_images(x: Any, image_shape: tuple[int, ...] | None) -> None:
    """ValueError naming the shape unless ``x`` is a tensor of images [B, C, H, W] (of ``image_shape`` [C, H, W] if given)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or (image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape)):
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = "[B, C, H, W]" if image_shape is None else f"[B, {image_shape[0]}, {image_shape[1]}, {image_shape[2]}]"
        raise ValueError(f"x must be images of shape {want}, got {got}")


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
