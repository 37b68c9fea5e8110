"""The assignment's conv nets: any square image, and the assignment's layout and parameter names."""

from __future__ import annotations

import pytest
import torch

from vaekit import SimpleVAE
from vaekit.architectures import count_parameters
from vaekit.config import ModelConfig
from vaekit.model import build_model


def test_assignment_takes_square_images_of_any_size_and_channel_count():
    for shape in [(1, 28, 28), (3, 32, 32), (1, 9, 9)]:
        model = build_model(ModelConfig(arch="assignment", num_filters=4), shape)
        assert model.decode(torch.zeros(1, 1, 2)).shape == (1, 1, *shape)
    with pytest.raises(ValueError, match=r"arch assignment needs square images.*got 28x32"):
        build_model(ModelConfig(arch="assignment"), (1, 28, 32))


def test_simplevae_is_the_assignment_architecture_with_the_assignments_names():
    model = SimpleVAE(K=2, num_filters=32)
    built = build_model(ModelConfig(arch="assignment"), (1, 28, 28))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    assert sorted(model.state_dict()) == sorted(
        ["log_sig_x"] + [f"encoder.{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias")]
        + [f"decoder.{i}.{p}" for i in (0, 3, 5) for p in ("weight", "bias")]
    )
    enc = (1 * 32 * 25 + 32) + (32 * 32 * 25 + 32) + (12800 * 3 + 3)  # conv, conv, Linear(F*20*20, K+1)
    dec = (2 * 12800 + 12800) + (32 * 32 * 25 + 32) + (32 * 1 * 25 + 1)  # Linear(K, F*20*20), convT, convT
    assert count_parameters(model) == enc + dec + 1  # + log_sig_x
