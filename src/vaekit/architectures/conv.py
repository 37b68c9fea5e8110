"""Strided conv nets for any image shape and channel count, the decoder mirroring the encoder.

Encoder: ``depth`` x [Conv2d(k=3, stride 2, padding 1) -> act], channels F, 2F, 4F, ... (each
halves the side, rounding up: 25 -> 13 -> 7 -> 4), then Flatten -> Linear(P).
Decoder: Linear(K) -> Unflatten -> act, then ``depth`` ConvTranspose2d(k=3, stride 2, padding 1)
whose output_padding (0 or 1) restores each side exactly, the last one to C channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..registry import option
from . import ACTIVATIONS, ARCHITECTURES, Architecture, activation

MIN_FINAL_SIDE = 2


def sides(size: int, depth: int) -> list[int]:
    """[size, ceil(size/2), ...]: the side before and after each stride-2 layer (depth + 1 values)."""
    out = [size]
    for _ in range(depth):
        out.append((out[-1] + 1) // 2)
    return out


@ARCHITECTURES.register
class Conv(Architecture):
    """conv: strided 3x3 convs for any image shape, --depth layers of --num-filters doubling, mirrored"""

    name = "conv"

    @dataclass
    class Options:
        num_filters: int = option(32, "channels of the first conv layer, doubling per layer", min=1)
        depth: int = option(3, "stride-2 conv layers in the encoder, mirrored in the decoder", min=1)
        activation: str = option("relu", "hidden activation", choices=tuple(ACTIVATIONS))

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        return build_conv(image_shape, latent_dim, num_params, self.options.num_filters, self.options.depth, self.options.activation)


def build_conv(
    image_shape: tuple[int, int, int], latent_dim: int, num_params: int, f: int, depth: int, act: str,
) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    hs, ws = sides(h, depth), sides(w, depth)
    if min(hs[-1], ws[-1]) < MIN_FINAL_SIDE:
        smallest = 2**depth * (MIN_FINAL_SIDE - 1) + 1  # ceil(s / 2^depth) >= 2
        raise ValueError(
            f"arch conv with depth {depth} halves the image {depth} times and needs at least {smallest}x{smallest} "
            f"pixels, got {h}x{w}; lower --depth or use --arch mlp"
        )
    chans = [f * 2**i for i in range(depth)]  # [F, 2F, 4F, ...]
    enc: list[nn.Module] = []
    for cin, cout in zip([c, *chans], chans):
        enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), activation(act)]  # [B, cout, ceil(h/2), ceil(w/2)]
    flat = chans[-1] * hs[-1] * ws[-1]
    enc += [nn.Flatten(), nn.Linear(flat, num_params)]  # [B, P]
    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.Unflatten(1, (chans[-1], hs[-1], ws[-1])), activation(act)]
    outs = [c, *chans[:-1]]  # each transposed conv's output channels, innermost last
    for i in reversed(range(depth)):
        # (in - 1) * 2 - 2 + 3 + output_padding = the side before layer i of the encoder
        pad = (hs[i] - (2 * hs[i + 1] - 1), ws[i] - (2 * ws[i + 1] - 1))
        dec.append(nn.ConvTranspose2d(chans[i], outs[i], 3, stride=2, padding=1, output_padding=pad))
        if i > 0:
            dec.append(activation(act))
    return nn.Sequential(*enc), nn.Sequential(*dec)
