"""The sampler kind's contract, run over every registered sampler on a small trained run its model suits
(a one-layer VAE's, else a VQ-VAE's): it prepares from the run folder, draws n latent codes of the model's
size, the same for the same seed and others for another, `vaekit sample` writes its grid where it says,
and a model it cannot draw for is refused in one line naming the sampler."""

from __future__ import annotations

import shutil

import pytest
import torch

from vaekit.cli import main
from vaekit.runfolder import RunFolder
from vaekit.samplers import SAMPLERS, Sampler, decode_samples, make_sampler


@pytest.fixture(scope="module")
def runs(uninterrupted, vq_run, tmp_path_factory):
    """Copies of a one-layer VAE's run and a VQ-VAE's (samplers may write their files into the run folder)."""
    copies = []
    for source in (uninterrupted, vq_run):
        copy = tmp_path_factory.mktemp("samplers") / "run"
        shutil.copytree(source, copy)
        copies.append(RunFolder(copy))
    return copies


@pytest.fixture
def run(runs, name):
    """The first of the runs whose model the sampler ``name`` can draw for."""
    part = make_sampler(name, small_options(name))
    suited = [r for r in runs if part.refusal(r.load_model()) is None]
    assert suited, f"sampler {name} refuses every test run's model"
    return suited[0]


def small_options(name):
    return SAMPLERS.pick_options(name, {"components": 2, "prior_width": 4, "prior_layers": 1, "prior_epochs": 1, "prior_batch_size": 64})


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_draws_seeded_codes_of_the_models_size(run, name):
    part = make_sampler(name, small_options(name))
    assert isinstance(part, Sampler) and part.name == name and part.help() and part.title(5, 1)
    model = run.load_model()
    part.prepare(run, model)
    a, b, c = part.sample_z(model, 5, 1), part.sample_z(model, 5, 1), part.sample_z(model, 5, 2)
    assert a.shape == (5, model.latent_dim) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    images = decode_samples(model, a)
    assert images.shape == (5, *model.image_shape) and images.dtype == torch.float32


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_vaekit_sample_writes_the_samplers_grid(run, name, capsys):
    options = [f"--{k.replace('_', '-')}={v}" for k, v in small_options(name).items()]
    assert main(["sample", str(run.path), "--sampler", name, "--n", "4", "--seed", "3", *options]) == 0
    path = run / make_sampler(name, small_options(name)).default_file(3)
    assert path.read_bytes()[:4] == b"\x89PNG" and str(path) in capsys.readouterr().out


def test_a_model_a_sampler_cannot_draw_for_is_refused_in_one_line(runs, capsys):
    refused = 0
    for name in SAMPLERS.names():
        part = make_sampler(name, small_options(name))
        for r in runs:
            why = part.refusal(r.load_model())
            if why is not None:
                refused += 1
                assert name in why and "\n" not in why
                assert main(["sample", str(r.path), "--sampler", name, "--n", "4"]) == 2
                assert why in capsys.readouterr().err
    assert refused  # vq-prior refuses the one-layer VAE


def test_an_option_of_another_sampler_is_refused(runs, capsys):
    run = runs[0]
    assert main(["sample", str(run.path), "--sampler", "prior", "--components", "3"]) == 2
    assert "sampler prior has no option components" in capsys.readouterr().err
