"""The strided conv nets: any size their depth allows, and a decoder that mirrors the encoder."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.model import build_model


@pytest.mark.parametrize("side,depth,ok", [(9, 3, True), (8, 3, False), (5, 2, True), (4, 2, False), (128, 5, True)])
def test_conv_takes_any_size_its_depth_allows_or_says_why_not(side, depth, ok):
    cfg = ModelConfig(arch="conv", num_filters=2, depth=depth)
    if ok:
        assert build_model(cfg, (1, side, side)).decode(torch.zeros(1, 1, 2)).shape[-2:] == (side, side)
    else:
        with pytest.raises(ValueError, match=rf"arch conv with depth {depth} .* needs at least {2**depth + 1}x{2**depth + 1} pixels, got {side}x{side}"):
            build_model(cfg, (1, side, side))


def test_conv_decoder_mirrors_the_encoder():
    model = build_model(ModelConfig(arch="conv", num_filters=8, depth=3), (3, 25, 25))
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16), (16, 32)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(32, 16), (16, 8), (8, 3)]


