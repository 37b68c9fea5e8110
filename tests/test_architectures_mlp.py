"""The fully connected nets: the IWAE paper's defaults, activations, and bad widths refused."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.model import build_model


def test_mlp_defaults_are_the_iwae_papers_and_bad_widths_are_refused():
    model = build_model(ModelConfig(arch="mlp", latent_dim=50, posterior="diagonal"), (1, 28, 28))
    widths = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 200), (200, 200), (200, 100)]
    assert all(isinstance(m, torch.nn.Tanh) for m in model.encoder if not isinstance(m, (torch.nn.Linear, torch.nn.Flatten)))
    relu = build_model(ModelConfig(arch="mlp", activation="relu"), (1, 28, 28))
    assert any(isinstance(m, torch.nn.ReLU) for m in relu.decoder)
    for bad in ["", "200,x", "0", "200,,200"]:
        with pytest.raises(ValueError, match="hidden must be comma-separated positive layer widths"):
            build_model(ModelConfig(arch="mlp", hidden=bad), (1, 28, 28))


