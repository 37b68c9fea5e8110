"""The architecture registry: every network takes its image shapes, counts its FLOPs right, and the
assignment's nets keep the assignment's layout."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaekit.architectures as architectures
from vaekit import SimpleVAE
from vaekit.architectures import ARCHITECTURES, count_parameters, flops_per_image
from vaekit.config import ModelConfig
from vaekit.experiment import build_model, resolve_arch

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 25, 25), (3, 16, 16), (1, 16, 24), (3, 64, 64)]


def test_every_module_of_the_package_is_registered():
    names = {m.name for m in pkgutil.iter_modules(architectures.__path__)}
    assert set(ARCHITECTURES) == names == {"assignment", "mlp", "conv"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("posterior", ["isotropic", "diagonal"])
def test_networks_map_images_to_parameters_and_latents_back_to_images(arch, shape, posterior):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=3, num_filters=4, hidden="16,8", posterior=posterior), shape)
    x = torch.rand(2, *shape)
    phi = model.encode(x)
    assert phi.shape == (2, 4 if posterior == "isotropic" else 6)
    out = model.decode(model.posterior.rsample(phi, 5))
    assert out.shape == (2, 5, *shape)
    out.sum().backward()  # every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p is not model.log_sig_x)


def test_assignment_takes_square_images_of_any_size_and_channel_count():
    for shape in [(1, 28, 28), (3, 32, 32), (1, 9, 9)]:
        model = build_model(ModelConfig(arch="assignment", num_filters=4), shape)
        assert model.decode(torch.zeros(1, 1, 2)).shape == (1, 1, *shape)
    with pytest.raises(ValueError, match=r"arch assignment needs square images.*got 28x32"):
        build_model(ModelConfig(arch="assignment"), (1, 28, 32))


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


@pytest.mark.parametrize("arch,shape", [("assignment", (1, 28, 28)), ("mlp", (1, 28, 28)), ("conv", (3, 32, 32)), ("conv", (1, 25, 25))])
def test_flops_per_image_match_torchs_flop_counter(arch, shape):
    model = build_model(ModelConfig(arch=arch, latent_dim=4, num_filters=8), shape)
    for net, example in ((model.encoder, torch.zeros(1, *shape)), (model.decoder, torch.zeros(1, 4))):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(example)
        assert flops_per_image(net, example) == counter.get_total_flops() > 0


def test_default_arch_is_the_assignments_for_mnist_shaped_data_and_conv_otherwise():
    assert resolve_arch(ModelConfig(), (1, 28, 28)) == "assignment"
    assert resolve_arch(ModelConfig(), (3, 28, 28)) == "conv"
    assert resolve_arch(ModelConfig(), (1, 32, 32)) == "conv"
    assert resolve_arch(ModelConfig(arch="mlp"), (1, 28, 28)) == "mlp"


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
