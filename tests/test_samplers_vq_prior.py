"""--sampler vq-prior on a trained VQ-VAE run: fitted once to the model's weights and options and reused, refitted
when either changes; draws code grids decoded through the codebook; ``vaekit eval`` adds the bits/dim under it
(the same numbers as ``vq_bits_per_dim`` on those images); the report shows its samples and the VQ panel; and a
run of another model is refused in one clear line."""

from __future__ import annotations

import json
import os

import pytest
import torch

from vaekit.cli import main as cli_main
from vaekit.codeprior import load_code_prior, vq_bits_per_dim
from vaekit.commands import eval_run, report_run, sample_run, train_run
from vaekit.config import ModelConfig, TrainConfig
from vaekit.runfolder import RunFolder
from vaekit.samplers import make_sampler
from vaekit.samplers.vq_prior import PRIOR_FILE, PRIOR_JSON

TINY = {"prior_width": 4, "prior_layers": 1, "prior_epochs": 1, "prior_batch_size": 64}


def test_training_logs_the_codebook_terms_per_epoch(vq_run):
    row = RunFolder(vq_run).metrics()[-1]
    for name in ("train_perplexity", "train_codes_used", "train_commitment", "train_restarts"):
        assert name in row and row[name] >= 0
    assert 1 <= row["train_perplexity"] <= 8 and row["objective"] == "vqvae(commitment=0.25)"


@pytest.mark.slow  # four fits and reports: about a minute on the busy 2-core machine
def test_the_prior_is_fitted_once_and_refitted_when_options_or_weights_change(vq_run, capsys):
    assert cli_main(["sample", str(vq_run), "--sampler", "vq-prior", "--n", "9", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]]) == 0
    said = capsys.readouterr().out
    assert "pixelcnn prior over the 7x7 codes" in said and "bits/dim of the 64 test images" in said
    info = json.loads((vq_run / PRIOR_JSON).read_text())
    assert info["settings"]["width"] == 4 and info["uniform_nll"] == pytest.approx(49 * torch.log(torch.tensor(8.0)).item())
    stamp = os.stat(vq_run / PRIOR_FILE).st_mtime_ns
    sample_run(vq_run, n=4, sampler="vq-prior", options=TINY)  # the same: reused
    assert os.stat(vq_run / PRIOR_FILE).st_mtime_ns == stamp
    sample_run(vq_run, n=4, sampler="vq-prior", options={**TINY, "prior_net": "transformer"})  # other options: refitted
    assert load_code_prior(vq_run / PRIOR_FILE)[0].kind == "transformer"
    sample_run(vq_run, n=4, sampler="vq-prior", options=TINY)
    assert load_code_prior(vq_run / PRIOR_FILE)[0].kind == "pixelcnn"


def test_samples_are_code_vectors_of_the_codebook_and_seeded(vq_run):
    run = RunFolder(vq_run)
    model = run.load_model()
    sampler = make_sampler("vq-prior", TINY)
    sampler.prepare(run, model)
    z = sampler.sample_z(model, 6, seed=1)
    assert z.shape == (6, model.latent_dim)
    codes = model.quantize(z)[1]
    assert torch.equal(model.code_vectors(codes), z)  # every position holds a codebook vector
    assert torch.equal(z, sampler.sample_z(model, 6, seed=1))


def test_eval_adds_the_bits_per_dim_under_the_prior_and_the_report_shows_it(vq_run):
    sample_run(vq_run, n=4, sampler="vq-prior", options=TINY)
    result = eval_run(vq_run, limit=20, progress=False)
    run = RunFolder(vq_run)
    model, data = run.load_model(), run.load_data()
    prior, _ = load_code_prior(vq_run / PRIOR_FILE)
    terms = vq_bits_per_dim(model, prior, run.images(data, "test")[:20], seed=0)
    vq = result["vq_prior"]
    assert vq["prior_net"] == "pixelcnn" and result["k"] == 1
    assert vq["bits_per_dim_8bit"] == pytest.approx(terms["bits_per_dim"].mean().item(), rel=1e-9)
    assert vq["prior_nll"] == pytest.approx(terms["prior_nll"].mean().item(), rel=1e-9)
    assert 0 < result["codebook_perplexity"] <= 8
    report_run(vq_run)
    page = (vq_run / "report.html").read_text()
    for needle in ("samples_vq_prior.png", "vx-codes", "VQ-VAE with its code prior", "codebook perplexity"):
        assert needle in page, needle


def test_a_run_of_another_model_is_refused(tiny_dataset_dir, tmp_path):
    out = tmp_path / "gauss"
    train_run(ModelConfig(num_filters=2), TrainConfig(dataset=str(tiny_dataset_dir), epochs=1, max_steps=1, batch_size=64,
                                                       eval_samples=1, device="cpu"), out, progress=False)
    with pytest.raises(ValueError, match=r"sampler vq-prior needs a VQ-VAE run \(vaekit train --arch vqvae\); this run's model is a VAE"):
        sample_run(out, n=4, sampler="vq-prior", options=TINY)
