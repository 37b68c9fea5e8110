"""Fully connected nets, as in the papers; the default is the IWAE paper's (Burda et al. 2016):
784-200-200-K, two hidden layers of 200 tanh units, mirrored in the decoder.

Encoder: Flatten -> [Linear -> act] per hidden width -> Linear(h_last, P).
Decoder: [Linear -> act] per hidden width, reversed -> Linear(h_first, C*H*W) -> Unflatten(C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..registry import option
from . import ACTIVATIONS, ARCHITECTURES, Architecture, activation


def parse_hidden(text: str) -> list[int]:
    """ "200,200" -> [200, 200]; a clear error for anything else."""
    try:
        widths = [int(part) for part in str(text).split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden must be comma-separated positive layer widths such as 200,200, got {text!r}")
    return widths


@ARCHITECTURES.register
class MLP(Architecture):
    """mlp: fully connected, --hidden widths mirrored in the decoder (default 200,200 tanh: the IWAE paper's)"""

    name = "mlp"

    @dataclass
    class Options:
        hidden: str = option("200,200", "hidden layer widths of the encoder, comma-separated (the decoder mirrors them)")
        activation: str = option("tanh", "hidden activation", choices=tuple(ACTIVATIONS))

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, num_params: int) -> tuple[nn.Module, nn.Module]:
        c, h, w = image_shape
        d = c * h * w
        widths = parse_hidden(self.options.hidden)
        act = self.options.activation
        enc: list[nn.Module] = [nn.Flatten()]  # [B, D]
        for fan_in, fan_out in zip([d, *widths], widths):
            enc += [nn.Linear(fan_in, fan_out), activation(act)]  # [B, h]
        enc.append(nn.Linear(widths[-1], num_params))  # [B, P]
        rev = widths[::-1]
        dec: list[nn.Module] = []
        for fan_in, fan_out in zip([latent_dim, *rev], rev):
            dec += [nn.Linear(fan_in, fan_out), activation(act)]  # [M, h]
        dec += [nn.Linear(rev[-1], d), nn.Unflatten(1, (c, h, w))]  # [M, D] -> [M, C, H, W]
        return nn.Sequential(*enc), nn.Sequential(*dec)
