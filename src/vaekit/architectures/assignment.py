"""The assignment's conv nets: two 5x5 convolutions (no padding) and a Linear, mirrored.

Encoder: Conv2d(C, F, 5) -> ReLU -> Conv2d(F, F, 5) -> ReLU -> Flatten -> Linear(F*S*S, P), S = H - 8.
Decoder: Linear(K, F*S*S) -> Unflatten -> ReLU -> ConvTranspose2d(F, F, 5) -> ReLU -> ConvTranspose2d(F, C, 5).
The layer indices are the assignment's, so its state_dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import option
from . import ARCHITECTURES, Architecture

KERNEL = 5


class AssignmentDecoder(nn.Sequential):
    """The assignment's decoder; when its convolutions are channels_last, the Linear writes NHWC directly."""

    def __init__(self, latent_dim: int, num_filters: int, side: int, channels: int):
        flat = num_filters * side * side
        super().__init__(
            nn.Linear(latent_dim, flat),  # [M, F*S*S]
            nn.Unflatten(1, (num_filters, side, side)),  # [M, F, S, S]
            nn.ReLU(),
            nn.ConvTranspose2d(num_filters, num_filters, KERNEL),  # [M, F, S+4, S+4]
            nn.ReLU(),
            nn.ConvTranspose2d(num_filters, channels, KERNEL),  # [M, C, H, W]
        )
        self.latent_dim, self.num_filters, self.side = latent_dim, num_filters, side

    def forward(self, z: Tensor) -> Tensor:  # [M, K] -> [M, C, H, W]
        if not self[3].weight.is_contiguous(memory_format=torch.channels_last):
            return super().forward(z)
        h = self._linear_channels_last(z)  # [M, F, S, S] in NHWC memory
        for layer in list(self)[2:]:
            h = layer(h)
        return h

    def _linear_channels_last(self, z: Tensor) -> Tensor:
        """Linear + Unflatten with the output laid out channels_last, saving a copy.

        The same Linear, its weight rows taken in (h, w, c) order instead of (c, h, w): the
        product is then [M, S, S, F] in memory, which is [M, F, S, S] in channels_last.
        """
        f, s, K = self.num_filters, self.side, self.latent_dim
        lin = self[0]
        w = lin.weight.view(f, s * s, K).transpose(0, 1).reshape(f * s * s, K)  # [S*S*F, K]
        bias = lin.bias.view(f, s * s).t().reshape(-1)  # [S*S*F]
        return F.linear(z, w, bias).view(z.shape[0], s, s, f).permute(0, 3, 1, 2)  # [M, F, S, S]


@ARCHITECTURES.register
class Assignment(Architecture):
    """assignment: the assignment's conv nets (two 5x5 convs and a Linear, mirrored), square images >= 9x9"""

    name = "assignment"

    @dataclass
    class Options:
        num_filters: int = option(32, "channels of the hidden conv layers", min=1)

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        return build_assignment(image_shape, latent_dim, num_params, self.options.num_filters)


def build_assignment(image_shape: tuple[int, int, int], latent_dim: int, num_params: int, f: int) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    if h != w or h < 2 * (KERNEL - 1) + 1:
        raise ValueError(
            f"arch assignment needs square images of at least {2 * (KERNEL - 1) + 1}x{2 * (KERNEL - 1) + 1} pixels, "
            f"got {h}x{w}; use --arch conv or --arch mlp"
        )
    side = h - 2 * (KERNEL - 1)  # 28 -> 20
    encoder = nn.Sequential(
        nn.Conv2d(c, f, KERNEL),  # [B, F, H-4, W-4]
        nn.ReLU(),
        nn.Conv2d(f, f, KERNEL),  # [B, F, S, S]
        nn.ReLU(),
        nn.Flatten(),  # [B, F*S*S]
        nn.Linear(f * side * side, num_params),  # [B, P]
    )
    return encoder, AssignmentDecoder(latent_dim, f, side, c)
