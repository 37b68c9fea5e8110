"""The GMM sampler: fitted once on the training set's posterior means and kept in the run folder; its
codes are the mixture's own draws under the seed."""

from __future__ import annotations

import shutil

import torch

from vaekit.gmm import fit_gmm
from vaekit.latents import posterior_means
from vaekit.runfolder import RunFolder
from vaekit.samplers.gmm import GMM_FILE, GMM_JSON, GMMSampler, saved_gmm


def test_prepare_fits_on_the_training_means_keeps_the_mixture_and_samples_it(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    model, data = run.load_model(), run.load_data()
    sampler = GMMSampler(GMMSampler.Options(components=2))
    info = sampler.prepare(run, model, data)
    assert (run / GMM_FILE).exists() and (run / GMM_JSON).exists() and info["components"] == 2
    # the same fit as fit_gmm on the training set's posterior means (seed 0)
    ref = fit_gmm(posterior_means(model, run.images(data, "train")), components=2, seed=0)
    torch.testing.assert_close(sampler.gmm.means, ref.means)
    assert torch.equal(sampler.sample_z(model, 7, 3), ref.sample(7, torch.Generator().manual_seed(3)))
    # a second prepare reuses the file (the same object's numbers, not a refit)
    mtime = (run / GMM_FILE).stat().st_mtime_ns
    GMMSampler(GMMSampler.Options(components=2)).prepare(run, model, data)
    assert (run / GMM_FILE).stat().st_mtime_ns == mtime and saved_gmm(run).components == 2


def test_a_mixture_fitted_to_other_weights_is_refitted(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    model, data = run.load_model(), run.load_data()
    GMMSampler(GMMSampler.Options(components=2)).prepare(run, model, data)
    assert saved_gmm(run).info["model_sha256"] == run.weights_digest() is not None
    with torch.no_grad():  # the run's model trained again (train --overwrite): other weights in model.safetensors
        for p in model.parameters():
            p.add_(0.01)
    from vaekit.checkpoint import save_weights

    save_weights(run / "model.safetensors", model.state_dict())
    sampler = GMMSampler(GMMSampler.Options(components=2))
    sampler.prepare(run, model, data)
    ref = fit_gmm(posterior_means(model, run.images(data, "train")), components=2, seed=0)
    torch.testing.assert_close(sampler.gmm.means, ref.means)  # the new model's means, not the old mixture
    assert saved_gmm(run).info["model_sha256"] == run.weights_digest()
