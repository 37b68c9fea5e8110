"""The condition kind's contract, run over every registered condition: c's shape, the encoder's extra channels and the
scored pixels as the condition says; a model of it built on every architecture vaekit wraps (assignment, mlp, conv)
maps images and their conditions to the posterior's parameters and latents back to images, with a gradient to every
parameter; image b's n samples of z are decoded with image b's c (against decoding each image alone); a network run
without a condition held is a clear error; the choices; the config: no condition leaves config.json as it was, a
condition's options need the condition, and a run's config rebuilds the same model."""

from __future__ import annotations

import pkgutil

import pytest
import torch

import vaekit.conditions as conditions
from vaekit.conditioning import given
from vaekit.conditions import CONDITIONS, make_condition
from vaekit.config import ModelConfig, config_from_dict, config_to_dict, validate
from vaekit.model import build_model

OPTIONS = {"label": {"classes": 3}}  # a condition's options that the data would give
ARCH = {"assignment": {"num_filters": 4}, "mlp": {"hidden": "16"}, "conv": {"num_filters": 4, "depth": 2}}
SHAPE = {"assignment": (1, 12, 12), "mlp": (1, 6, 8), "conv": (3, 8, 8)}


def condition(name, shape=(1, 6, 8)):
    return make_condition(name, OPTIONS.get(name)).bind(shape)


def batch(shape, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *shape, generator=g), torch.tensor([0, 2, 1, 0, 1, 2][:b])


def model(name, arch, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, latent_dim=2, condition=name, options={**ARCH[arch], **OPTIONS.get(name, {}), **kw})
    return build_model(cfg, SHAPE[arch])


def test_every_module_of_the_package_is_registered():
    names = {m.name for m in pkgutil.iter_modules(conditions.__path__) if not m.name.startswith("_")}
    assert {cls.__module__.rsplit(".", 1)[1] for _, cls in CONDITIONS.items() if cls.__module__.startswith("vaekit.")} == names
    assert {"label", "quadrants"} <= set(CONDITIONS)


@pytest.mark.parametrize("name", CONDITIONS.names())
def test_the_condition_vector_channels_and_scored_pixels_have_the_sizes_it_says(name):
    shape = (1, 6, 8)
    cond = condition(name, shape)
    x, y = batch(shape)
    c = cond.vector(x, y)
    assert c.shape == (3, cond.size) and c.dtype == x.dtype
    assert cond.channels(c).shape == (3, cond.extra_channels, 6, 8)
    scored = cond.scored()
    assert scored is None or (scored.dtype == torch.bool and scored.shape == (48,) and 0 < int(scored.sum()) < 48)
    names, vectors = cond.choices(x, y)
    assert len(names) == vectors.shape[0] >= 1 and vectors.shape[1] == cond.size and len(set(names)) == len(names)
    assert cond.find(names[-1], names) == len(names) - 1 and cond.find("0", names) == 0
    with pytest.raises(ValueError, match="not a"):
        cond.find("no such thing", names)
    assert cond.help() and cond.quantity().startswith("log p(") and cond.describe()


@pytest.mark.parametrize("arch", ["assignment", "mlp", "conv"])
@pytest.mark.parametrize("name", CONDITIONS.names())
def test_a_conditional_model_of_every_architecture_maps_images_and_conditions(name, arch):
    m = model(name, arch)
    x, y = batch(SHAPE[arch])
    with given(m, x, y):
        phi = m.encode(x)
        out = m.decode(m.rsample_z(phi, 5))
    assert phi.shape == (3, m.num_params) and out.shape == (3, 5, *SHAPE[arch])
    out.sum().backward()  # every parameter gets a gradient, through the condition's channels and inputs too
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad and p is not m.log_sig_x)


@pytest.mark.parametrize("name", CONDITIONS.names())
def test_image_b_is_decoded_with_its_own_condition_for_each_of_its_samples(name):
    m = model(name, "mlp")
    x, y = batch(SHAPE["mlp"], b=3)
    z = torch.randn(3, 4, 2)
    with torch.no_grad(), given(m, x, y):
        together = m.decode(z)  # [3, 4, ...]
    for b in range(3):  # brute force: image b alone, its samples one at a time
        for i in range(4):
            with torch.no_grad(), given(m, x[b : b + 1], y[b : b + 1]):
                alone = m.decode(z[b : b + 1, i : i + 1])
            torch.testing.assert_close(together[b, i], alone[0, 0])
    with torch.no_grad(), given(m, x, y):
        other = m.decode(z.flip(0))  # a different pairing of z and c decodes to something else
    assert not torch.allclose(other.flip(0), together)


@pytest.mark.parametrize("name", CONDITIONS.names())
def test_networks_without_a_condition_held_are_a_clear_error(name):
    m = model(name, "mlp")
    x, y = batch(SHAPE["mlp"])
    with pytest.raises(ValueError, match=r"conditional .*given\(model, x, labels\)"):
        m.encode(x)
    with pytest.raises(ValueError, match="held is for 3 images; the networks got 4 rows"):
        with given(m, x, y):
            m.decode(torch.zeros(2, 2, 2))
    with given(m, x, y):  # holds nest: the inner condition, then the outer one again
        with given(m, x[:1], y[:1]):
            assert m.encode(x[:1]).shape[0] == 1
        assert m.encode(x).shape[0] == 3
    assert m.condition.held is None


def test_the_label_condition_needs_labels_and_an_unconditional_model_ignores_them():
    m = model("label", "mlp")
    x, _ = batch(SHAPE["mlp"])
    with pytest.raises(ValueError, match="made from the images' labels"):
        with given(m, x):
            pass
    plain = build_model(ModelConfig(arch="mlp", latent_dim=2, options={"hidden": "16"}), SHAPE["mlp"])
    with given(plain, x, torch.zeros(3, dtype=torch.long)):
        assert plain.encode(x).shape == (3, 3)


def test_no_condition_leaves_config_json_as_before_and_a_condition_is_recorded_and_rebuilt():
    plain = config_to_dict(ModelConfig(arch="mlp"))
    assert "condition" not in plain and plain["options"] == {"hidden": "200,200", "activation": "tanh"}
    old = {"arch": "mlp", "latent_dim": 2, "likelihood": "gaussian", "posterior": "isotropic", "prior": "standard-normal", "options": {}}
    assert config_from_dict(ModelConfig, old).condition is None  # a run of an earlier version loads as before
    cfg = ModelConfig(arch="mlp", latent_dim=2, condition="quadrants", options={"hidden": "16", "quadrants": 3})
    saved = config_to_dict(cfg)
    assert saved["condition"] == "quadrants" and saved["options"]["quadrants"] == 3
    again = config_from_dict(ModelConfig, saved)
    a, b = build_model(cfg, (1, 6, 8)), build_model(again, (1, 6, 8))
    assert a.state_dict().keys() == b.state_dict().keys() and b.condition.options.quadrants == 3


def test_a_conditions_options_need_the_condition_and_an_own_model_architecture_is_refused():
    with pytest.raises(ValueError, match="--quadrants is an option of condition quadrants; give --condition quadrants too"):
        validate(ModelConfig(arch="mlp", options={"quadrants": 2}))
    with pytest.raises(ValueError, match="--quadrants is an option of condition quadrants, not of condition label"):
        validate(ModelConfig(arch="mlp", condition="label", options={"quadrants": 2}))
    with pytest.raises(ValueError, match="condition must be one of .*label.*, got 'colour'"):
        validate(ModelConfig(condition="colour"))
    with pytest.raises(ValueError, match="quadrants must be one of 1, 2, 3, got 4"):
        validate(ModelConfig(condition="quadrants", options={"quadrants": 4}))
    from vaekit.architectures import ARCHITECTURES, Architecture

    class Own(Architecture):
        name = "own-model-test"

        def build_model(self, *args):
            raise AssertionError("not reached")

    ARCHITECTURES.register(Own)
    try:
        with pytest.raises(ValueError, match="--condition label needs an architecture whose encoder and decoder vaekit wraps"):
            build_model(ModelConfig(arch="own-model-test", condition="label", options={"classes": 2}), (1, 6, 8))
    finally:
        ARCHITECTURES._parts.pop("own-model-test")
    for arch in ("hvae", "vqvae"):  # the shipped architectures with models of their own
        with pytest.raises(ValueError, match=f"arch {arch} builds a model of its own"):
            build_model(ModelConfig(arch=arch, condition="label", options={"classes": 2}), (1, 28, 28))
    with pytest.raises(ValueError, match="--condition label cannot take --prior vamp: that prior runs the encoder"):
        build_model(ModelConfig(arch="mlp", prior="vamp", condition="label", options={"classes": 2, "pseudo_inputs": 3}), (1, 28, 28))
