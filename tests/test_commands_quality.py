"""Sample quality of a run (vaekit.commands.quality, `vaekit eval --generate N`): recorded in the eval JSON and
RUN_DIR/sample_quality.json with N, one entry per sampler, equal to sample_quality recomputed from the images
`vaekit sample --out x.npy` saves with the same seed; shown in the report; the random-features fallback named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.commands import eval_run
from vaekit.commands.quality import QUALITY_FILE, quality_run
from vaekit.features import load_extractor
from vaekit.report import build_report
from vaekit.runfolder import RunFolder
from vaekit.sample_quality import sample_quality

CHEAP_EVAL = ["--k", "1", "--limit", "2", "--samples", "1", "--no-progress"]
FIGURES = ("fd", "kid", "kid_se", "precision", "recall", "density", "coverage", "mean_entropy", "marginal_entropy")


@pytest.fixture
def run(uninterrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(uninterrupted, copy)
    return RunFolder(copy)


def test_eval_generate_records_n_and_figures_that_a_recomputation_from_the_npy_equals(run, tmp_path, capsys):
    assert main(["eval", str(run.path), *CHEAP_EVAL, "--generate", "40", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    entry = json.loads((run / "eval_test.json").read_text())["sample_quality"]
    assert json.loads((run / QUALITY_FILE).read_text()) == {"format": "vaekit.sample_quality/1", "samplers": {"prior": entry}}
    assert (entry["sampler"], entry["n"], entry["n_fake"], entry["n_real"], entry["seed"]) == ("prior", 40, 40, 64, 3)
    assert entry["fd_name"] == "FD-classifier" and entry["extractor_kind"] == "classifier"
    assert entry["extractor"].startswith("classifier trained on ") and len(entry["class_shares"]) == 10
    # the printout: every figure with its n, the features named, never "FID" as a name of ours
    assert "sample quality: 40 images from the prior sampler, seed 3, against the test split" in printed
    assert f"features: {entry['extractor']} (128 features)" in printed
    assert f"FD-classifier {entry['fd']:.4g} (n_real=64, n_fake=40)" in printed
    assert "KID " in printed and "precision " in printed and "label entropy: per sample" in printed
    assert f"wrote {run / QUALITY_FILE}" in printed

    # the same images, saved by vaekit sample with the same seed, measured from the file
    npy = tmp_path / "x.npy"
    assert main(["sample", str(run.path), "--n", "40", "--seed", "3", "--out", str(npy)]) == 0
    images = torch.from_numpy(np.load(npy))  # [40, 1, 28, 28] uint8
    data = run.load_data()
    extractor = load_extractor(data)
    feats, probs = extractor.features_and_probs(images)
    again = sample_quality(extractor.features(data.test_uint8), feats, probs, extractor=extractor.name)
    for key in FIGURES:
        assert entry[key] == pytest.approx(again[key], rel=1e-12, abs=1e-15), key
    assert entry["class_shares"] == pytest.approx(again["class_shares"], rel=1e-12, abs=1e-15)


def test_one_entry_per_sampler_replaced_when_remeasured_and_a_report_row_each(run):
    first = quality_run(run.path, 30, seed=1)
    gmm = quality_run(run.path, 30, sampler="gmm", options={"components": 2}, seed=1)
    again = quality_run(run.path, 20, seed=2)
    saved = json.loads((run / QUALITY_FILE).read_text())["samplers"]
    assert set(saved) == {"prior", "gmm"} and saved["gmm"] == gmm and saved["prior"] == again != first
    assert gmm["options"] == {"components": 2} and gmm["fit"]["components"] == 2
    assert (again["n"], again["seed"], gmm["n"]) == (20, 2, 30)

    html = build_report(run.path)
    section = html[html.index('<h2 id="sample-quality">') : html.index('<h2 id="figures">')]
    assert f"Features: <b>{gmm['extractor']}</b>" in section
    for e, label in ((again, "prior"), (gmm, "gmm (components=2)")):
        row = [label, f"{e['n']:,}", "64", str(e["seed"]), f"{e['fd']:.3f}", f"{e['kid']:.4f} ± {e['kid_se']:.4f}",
               *(f"{e[k]:.3f}" for k in ("precision", "recall", "density", "coverage")),
               f"{e['mean_entropy']:.3f} / {e['marginal_entropy']:.3f}"]
        assert f"<td>{row[0]}</td>" + "".join(f'<td class="num">{c}</td>' for c in row[1:]) in section, label
    assert '<a href="#sample-quality">Sample quality</a>' in html


def test_generate_is_checked_before_the_evaluation_and_absent_leaves_eval_unchanged(run, capsys):
    with pytest.raises(SystemExit):  # argparse: exit status 2
        main(["eval", str(run.path), "--generate", "5"])
    assert "--generate: must be >= 6, got 5" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--generate must be an int >= 6 .*, got 5"):
        eval_run(run.path, generate=5)
    assert main(["eval", str(run.path), "--sampler", "gmm"]) == 2
    assert "--sampler and its options choose the images of --generate N; give --generate too" in capsys.readouterr().err
    assert main(["eval", str(run.path), "--generate", "10", "--components", "3"]) == 2
    assert "sampler prior has no option components" in capsys.readouterr().err
    assert not (run / "eval_test.json").exists()  # refused before anything ran

    assert main(["eval", str(run.path), *CHEAP_EVAL]) == 0
    assert "sample quality" not in capsys.readouterr().out
    assert "sample_quality" not in json.loads((run / "eval_test.json").read_text())
    assert not (run / QUALITY_FILE).exists()


def test_unlabelled_data_is_measured_in_random_features_named_in_the_printout(tmp_path, capsys):
    np.save(tmp_path / "faces.npy", np.random.default_rng(0).random((200, 16, 16)))  # no labels; 20 test images
    args = ["--dataset", str(tmp_path / "faces.npy"), "--batch-size", "20", "--max-steps", "2", "--num-filters", "4",
            "--eval-samples", "1", "--device", "cpu", "--seed", "3", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(["train", *args]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), *CHEAP_EVAL, "--generate", "12"]) == 0
    printed = capsys.readouterr().out
    assert "features: random conv features (no labels, seed 0) (128 features)" in printed
    assert "FD-random " in printed and "(n_real=20, n_fake=12)" in printed
    assert "label entropy and class shares: not available (the features have no classifier)" in printed
    entry = json.loads((tmp_path / "run" / QUALITY_FILE).read_text())["samplers"]["prior"]
    assert (entry["fd_name"], entry["extractor_kind"], entry["mean_entropy"], entry["extractor_accuracy"]) == ("FD-random", "random", None, None)
    assert "random conv features (no labels, seed 0)" in build_report(tmp_path / "run")


def test_a_test_set_too_small_for_prdc_is_refused_before_the_evaluation(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "few.npy", np.random.default_rng(1).random((50, 16, 16)))  # 5 test images at --test-fraction 0.1
    args = ["--dataset", str(tmp_path / "few.npy"), "--test-fraction", "0.1", "--batch-size", "15", "--max-steps", "1",
            "--num-filters", "4", "--eval-samples", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(["train", *args]) == 0
    capsys.readouterr()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the evaluation ran before the sample-quality request was checked")

    monkeypatch.setattr("vaekit.commands.evaluate.evaluate", no_evaluation)
    monkeypatch.delenv("VAEKIT_DEBUG", raising=False)
    assert main(["eval", str(tmp_path / "run"), *CHEAP_EVAL, "--generate", "10"]) == 2
    assert "error: the test split of " in (err := capsys.readouterr().err) and "has 5 images; sample quality needs at least 6" in err
    assert not (tmp_path / "run" / "eval_test.json").exists()


def test_a_sampler_that_cannot_draw_for_the_model_and_a_conditional_model_are_refused_before_the_evaluation(
    run, tiny_dataset_dir, tmp_path, capsys, monkeypatch,
):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("the evaluation ran before the sample-quality request was checked")

    monkeypatch.setattr("vaekit.commands.evaluate.evaluate", no_evaluation)
    monkeypatch.delenv("VAEKIT_DEBUG", raising=False)
    assert main(["eval", str(run.path), *CHEAP_EVAL, "--generate", "10", "--sampler", "vq-prior"]) == 2
    assert "sampler vq-prior needs a VQ-VAE run" in capsys.readouterr().err
    conditional = tmp_path / "cvae"
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--condition", "label", "--arch", "mlp", "--hidden", "8", "--latent-dim", "2",
                 "--max-steps", "1", "--epochs", "1", "--eval-samples", "1", "--device", "cpu", "--no-progress", "--out", str(conditional)]) == 0
    capsys.readouterr()
    assert main(["eval", str(conditional), *CHEAP_EVAL, "--generate", "10"]) == 2
    err = capsys.readouterr().err
    assert "sample quality measures a model's unconditional samples" in err and "condition label" in err
    assert not (run / "eval_test.json").exists() and not (conditional / "eval_test.json").exists()
