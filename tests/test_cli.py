"""The vaekit command end to end, on a tiny budget."""

import json

import pytest
import torch

from vaekit import load_run
from vaekit.cli import main
from vaekit.runfolder import RUN_FILES

from helpers import run_vaekit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--max-steps", "3", "--epochs", "1", "--eval-samples", "1", "--batch-size", "32", "--num-filters", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--seed", "1", "--out", str(out)]) == 0
    return out


def test_train_writes_the_run_folder(run_dir, capsys):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    for name in ("elbo_curve.png", "samples.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["train"]["max_steps"] == 3 and cfg["train"]["seed"] == 1
    assert cfg["model"] == {  # the chosen parts' options only
        "arch": "assignment", "latent_dim": 2, "likelihood": "gaussian", "posterior": "isotropic", "prior": "standard-normal",
        "options": {"num_filters": 8},
    }
    assert cfg["train"]["options"] == {"samples": 1}
    assert cfg["data"]["train_images"] == 60000 and cfg["data"]["test_images"] == 10000
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["epoch"] == 1 and row["steps"] == 3
    for key in ("train_elbo", "test_elbo", "test_elbo_se", "sigma_x", "seconds"):
        assert isinstance(row[key], float) and row[key] == row[key], key
    assert row["test_elbo_se"] > 0


def test_the_saved_model_loads(run_dir):
    model, meta = load_run(run_dir)
    assert model.K == 2 and model.encoder[0].out_channels == 8
    assert meta["train"]["batch_size"] == 32
    # the weights were trained (not the fresh initialization of the same seed)
    torch.manual_seed(1)
    from vaekit import SimpleVAE

    fresh = SimpleVAE(num_filters=8)
    assert not torch.equal(fresh.encoder[0].weight, model.encoder[0].weight)


@pytest.fixture
def seen(monkeypatch):
    """Replace training by a stub that records the TrainConfig the CLI built."""
    seen = {}

    def fake_train_run(model_cfg, train_cfg, out, **kw):
        seen["cfg"] = train_cfg
        out.mkdir(parents=True)
        return out

    monkeypatch.setattr("vaekit.commands.train_run", fake_train_run)
    return seen


def test_preset_assignment_fills_defaults_and_flags_override(tmp_path, seen):
    assert main(["train", "--preset", "assignment", "--epochs", "3", "--out", str(tmp_path / "r")]) == 0
    cfg = seen["cfg"]
    assert (cfg.epochs, cfg.batch_size, cfg.options, cfg.lr, cfg.calibrated) == (3, 256, {"samples": 10}, 1e-3, False)


def test_a_presets_option_the_chosen_objective_does_not_take_is_dropped_and_a_flags_refused(tmp_path, seen, capsys):
    assert main(["train", "--preset", "assignment", "--objective", "iwae", "--iw-samples", "7", "--out", str(tmp_path / "r")]) == 0
    assert seen["cfg"].options == {"iw_samples": 7}  # the preset's samples=10 is the ELBO's
    assert main(["train", "--objective", "iwae", "--samples", "3", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err  # the objectives that take --samples are named (elbo, and vqvae's too)
    assert "--samples is an option of objective elbo" in err and "not of objective iwae (which takes --iw-samples)" in err


def test_existing_output_folder_is_refused(run_dir, capsys):
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_sample(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "16", "--seed", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_figures(tmp_path):
    assert main(["figures", "--out", str(tmp_path)]) == 0
    for name in ("kl_mc_vs_exact.png", "rsample_hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_missing_run_folder_is_one_clear_line(tmp_path):
    r = run_vaekit("sample", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert "nope" in r.stderr and "does not exist" in r.stderr


def test_unreadable_run_folder_is_one_clear_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    r = run_vaekit("sample", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "config.json" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--samples", "-1"], "--samples"),
        (["train", "--lr", "abc"], "--lr"),
        (["train", "--device", "tpu"], "--device"),
        (["train", "--preset", "slow"], "--preset"),
        (["sample"], "RUN_DIR"),
    ],
)
def test_bad_arguments_get_argparse_errors(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_cuda_request_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_help_lists_the_commands():
    r = run_vaekit("--help")
    assert r.returncode == 0
    for cmd in ("train", "sample", "figures"):
        assert cmd in r.stdout


def test_time_budget_without_epochs_trains_until_the_budget(tmp_path, seen):
    assert main(["train", "--time-budget", "2.5", "--out", str(tmp_path / "a")]) == 0
    assert seen["cfg"].time_budget == 2.5 and seen["cfg"].epochs == 1000
    assert main(["train", "--time-budget", "2.5", "--epochs", "3", "--out", str(tmp_path / "b")]) == 0
    assert seen["cfg"].epochs == 3


# ----------------------------------------------------------------------------- #4: eval, figures, report


@pytest.fixture(scope="module")
def bernoulli_run(tmp_path_factory, tiny_dataset_dir):
    """A Bernoulli / dynamically binarized / diagonal-posterior run with K=3 (the PCA paths of the figures)."""
    out = tmp_path_factory.mktemp("runs") / "bernoulli"
    args = [
        "train", "--dataset", str(tiny_dataset_dir), "--likelihood", "bernoulli", "--binarize", "dynamic",
        "--posterior", "diagonal", "--latent-dim", "3", "--num-filters", "4", "--epochs", "2", "--batch-size", "64",
        "--eval-samples", "2", "--seed", "3", "--no-progress", "--out", str(out),
    ]
    assert main(args) == 0
    return out


def test_a_bernoulli_diagonal_run_writes_every_figure_and_the_report(bernoulli_run):
    for name in RUN_FILES:
        assert (bernoulli_run / name).is_file(), name
    for name in ("reconstructions.png", "latent_map.png", "latent_scatter.png", "interpolations.png"):
        assert (bernoulli_run / name).read_bytes()[:8] == PNG_MAGIC
    rows = [json.loads(line) for line in (bernoulli_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["sigma_x"] is None for r in rows)  # no sigma_x for a Bernoulli decoder
    # a Bernoulli log-likelihood of binary images is a log-probability: negative
    assert all(r["test_elbo"] < 0 for r in rows)
    model, meta = load_run(bernoulli_run)
    assert (model.likelihood.name, model.posterior.name, model.K) == ("bernoulli", "diagonal", 3)
    assert model.encoder[5].out_features == 6
    html = (bernoulli_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6


def test_eval_fuse_flag_reaches_the_evaluation(bernoulli_run, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # the plumbing only: tests/test_fusion.py compiles
    args = ["eval", str(bernoulli_run), "--k", "5", "--limit", "6", "--samples", "1", "--json", "--no-progress", "--device", "cpu",
            "--precision", "fp32"]
    runs = {}
    for fuse in ("on", "off", "auto"):
        capsys.readouterr()
        assert main(args + ["--fuse", fuse]) == 0
        runs[fuse] = json.loads(capsys.readouterr().out)
    assert (runs["on"]["fused"], runs["off"]["fused"], runs["auto"]["fused"]) == (True, False, False)  # auto: 30 decodes
    assert runs["on"]["log_likelihood"] == pytest.approx(runs["off"]["log_likelihood"], rel=1e-6)
    with pytest.raises(SystemExit):
        main(args + ["--fuse", "yes"])


def test_eval_json_numbers_and_file(bernoulli_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(bernoulli_run), "--k", "7", "--limit", "10", "--samples", "3", "--json", "--no-progress",
                 "--device", "cpu", "--precision", "fp32"]) == 0  # as load_run and evaluate below: the same device, noise and arithmetic
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads((bernoulli_run / "eval_test.json").read_text())
    assert (r["split"], r["n_images"], r["k"], r["n_samples"], r["dims"]) == ("test", 10, 7, 3, 784)
    assert len(r["kl_per_dim"]) == 3 and 0 <= r["active_units"] <= 3
    # a log-probability of binary images: log p(x) <= 0, and bits/dim in (0, ~1]
    assert r["log_likelihood"] < 0 and r["bits_per_dim"] > 0
    assert r["log_likelihood"] >= r["elbo"] - 3 * r["elbo_se"]
    assert "density" in r["note"]
    # the same evaluation from Python, independently: vaekit.evaluate on the binarized test images
    from vaekit import binarize, evaluate, load_dataset

    model, meta = load_run(bernoulli_run)
    images = binarize(load_dataset(meta["train"]["dataset"]).test_images)[:10]
    again = evaluate(model, images, k=7, n_samples=3, seed=0)
    assert again["log_likelihood"] == pytest.approx(r["log_likelihood"], rel=1e-5)
    assert again["elbo"] == pytest.approx(r["elbo"], rel=1e-5)


def test_eval_prints_a_readable_summary(run_dir, capsys):
    assert main(["eval", str(run_dir), "--k", "3", "--limit", "5", "--samples", "1", "--no-progress", "--split", "train"]) == 0
    out = capsys.readouterr().out
    for needle in ("train split, 5 images", "log p(x) (k=3)", "bits/dim", "active units", "note:", "eval_train.json"):
        assert needle in out, needle
    assert "per layer" not in out  # one stochastic layer: the count is not split
    assert (run_dir / "eval_train.json").is_file()


def test_eval_refuses_bad_k(run_dir, capsys):
    with pytest.raises(SystemExit):
        main(["eval", str(run_dir), "--k", "0"])
    assert "--k: must be >= 1, got 0" in capsys.readouterr().err


def test_figures_of_a_run_redraws_everything_and_the_report(run_dir, tmp_path):
    for name in ("latent_map.png", "report.html"):
        (run_dir / name).unlink()
    assert main(["figures", str(run_dir)]) == 0
    for name in ("latent_map.png", "kl_mc_vs_exact.png", "rsample_hist.png", "report.html"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text()
    assert "kl_mc_vs_exact.png" in html or "Monte-Carlo KL" in html


def test_report_command(run_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_text().startswith("<!DOCTYPE html>") or "<html" in out.read_text()[:200]
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_tensorboard_logs_scalars_and_samples(tmp_path, tiny_dataset_dir):
    pytest.importorskip("tensorboard", reason="--tensorboard needs the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    args = ["train", "--dataset", str(tiny_dataset_dir), "--epochs", "2", "--batch-size", "128", "--num-filters", "4",
            "--eval-samples", "1", "--no-progress", "--tensorboard", "--out", str(out)]
    assert main(args) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test_elbo = acc.Scalars("elbo/test_elbo")
    assert [e.step for e in test_elbo] == [1, 2]
    assert [e.value for e in test_elbo] == pytest.approx([r["test_elbo"] for r in rows], rel=1e-5)
    assert [e.step for e in acc.Images("samples")] == [1, 2]


def test_data_command_prints_what_was_found(tmp_path, capsys, monkeypatch, mnist):
    from vaekit.data import export_png

    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    export_png(mnist, tmp_path / "png", limit_train=30, limit_test=10)
    assert main(["data", str(tmp_path / "png"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for needle in ("train    30 images", "test     10 images", "28x28 (from the data), 1 channel", "classes  10: 0, 1, 2",
                   "skipped  0 files", str(tmp_path / "cache" / "imports"), "imported"):
        assert needle in out, needle
    assert main(["data", str(tmp_path / "png"), "--image-size", "16", "--channels", "3", "--no-progress"]) == 0
    assert "16x16 (given), 3 channels (given)" in capsys.readouterr().out


def test_data_command_bad_input_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    assert main(["data", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaekit data: error: ") and "is empty" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["data", str(tmp_path), "--channels", "2"])
    assert main(["data", str(tmp_path / "empty"), "--test-fraction", "1"]) == 2
    assert "test_fraction must be < 1" in capsys.readouterr().err


def test_resume_refuses_other_flags_and_missing_checkpoints(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_generate_flags_skip_a_sampler_option_named_like_an_eval_flag():
    """A sampler (a plugin's, say) whose option is called like one of eval's flags (--samples) does not break the
    parser, and eval's own --samples is never taken for that sampler's option."""
    from dataclasses import dataclass

    from vaekit.cli import _sampler_options, build_parser
    from vaekit.registry import option
    from vaekit.samplers import SAMPLERS, Sampler

    saved = dict(SAMPLERS._parts)
    try:
        @SAMPLERS.register
        class Clashing(Sampler):
            """clashing: a test sampler"""

            name = "clashing"

            @dataclass
            class Options:
                samples: int = option(3, "an option named like eval's --samples", min=1)

        args = build_parser().parse_args(["eval", "RUN", "--generate", "10", "--sampler", "clashing", "--samples", "7"])
        assert args.samples == 7 and "samples" not in args.sampler_option_names and "components" in args.sampler_option_names
        assert _sampler_options(args) == {}
    finally:
        SAMPLERS._parts = saved
