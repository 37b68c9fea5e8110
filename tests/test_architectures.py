"""The architecture kind's contract, run over every registered architecture: its networks map the image
shapes it accepts to the posterior's parameters and latents back to images, every parameter gets a
gradient, its FLOPs are counted right (against torch's FLOP counter), and its options are its own."""

from __future__ import annotations

import pkgutil

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaekit.architectures as architectures
from vaekit.architectures import ARCHITECTURES, Architecture, build_networks, flops_per_image
from vaekit.config import ModelConfig
from vaekit.model import build_model

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 25, 25), (3, 16, 16), (1, 16, 24), (3, 64, 64)]
SMALL = {"num_filters": 4, "hidden": "16,8"}  # small networks, where an architecture takes these options


def small(arch):
    return ARCHITECTURES.pick_options(arch, SMALL)


def accepts(arch, shape):
    try:
        build_networks(arch, small(arch), shape, 3, 4)
        return True
    except ValueError:
        return False


def test_every_module_of_the_package_is_registered():
    names = {m.name for m in pkgutil.iter_modules(architectures.__path__)}
    assert {cls.__module__.rsplit(".", 1)[1] for _, cls in ARCHITECTURES.items()} == names
    assert {"assignment", "mlp", "conv"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("posterior", ["isotropic", "diagonal"])
def test_networks_map_images_to_parameters_and_latents_back_to_images(arch, shape, posterior):
    if not accepts(arch, shape):
        pytest.skip(f"{arch} does not take {shape}")
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, latent_dim=3, posterior=posterior, options=small(arch))
    try:
        model = build_model(cfg, shape)
    except ValueError as e:  # an architecture with a posterior of its own (vqvae) refuses the others in one clear error
        assert f"arch {arch} has its own posterior" in str(e) and f"--posterior {posterior}" in str(e)
        return
    x = torch.rand(2, *shape)
    phi = model.encode(x)
    if not hasattr(model, "layer_sizes"):  # one stochastic layer: the posterior's parameters, K + 1 or 2K for the chosen Gaussian,
        # or the model's own (a VQ-VAE's z_e: P = K = D h w); several layers: phi is q(z_1|x)'s
        assert phi.shape == (2, {"isotropic": 4, "diagonal": 6}[posterior] if model.posterior.name == posterior else model.latent_dim)
    z = model.rsample_z(phi, 5)  # [2, 5, K] through the latent-variable interface
    out = model.decode(z)
    assert out.shape == (2, 5, *shape)
    loss = out.sum() + model.log_q(z, phi).sum() + model.log_p_z(z).sum()
    if hasattr(model, "codebook_losses"):  # a VQ-VAE's codebook learns from its own loss, not the decoder's (straight-through)
        loss = loss + model.codebook_losses(phi)[0].sum()
    loss.backward()  # every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p is not model.log_sig_x)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_flops_per_image_match_torchs_flop_counter(arch):
    shape = next(s for s in [(1, 28, 28), (3, 32, 32)] if accepts(arch, s))
    model = build_model(ModelConfig(arch=arch, latent_dim=4, options=small(arch)), shape)
    for net, example in ((model.encoder, torch.zeros(1, *shape)), (model.decoder, torch.zeros(1, model.latent_dim))):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(example)
        assert flops_per_image(net, example) == counter.get_total_flops() > 0


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_options_belong_to_their_architecture(arch):
    part = ARCHITECTURES[arch]
    assert issubclass(part, Architecture) and part.help()
    mine = set(part.option_names())
    fields = ARCHITECTURES.option_fields()  # every option of the kind: (its field, the parts that take it)
    for name in sorted(set(fields) - mine):
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} is an option of arch .*, not of arch {arch}"):
            ModelConfig(arch=arch, options={name: fields[name][0].default}).check_options()
    # the options recorded are this architecture's, with their defaults
    recorded = ModelConfig(arch=arch).recorded_options()
    assert set(recorded) == mine


def test_default_arch_is_the_assignments_for_mnist_shaped_data_and_conv_otherwise():
    assert ModelConfig().resolved((1, 28, 28)).arch == "assignment"
    assert ModelConfig().resolved((3, 28, 28)).arch == "conv"
    assert ModelConfig().resolved((1, 32, 32)).arch == "conv"
    assert ModelConfig(arch="mlp").resolved((1, 28, 28)).arch == "mlp"
