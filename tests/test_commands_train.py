"""vaekit train, and the verbs after it, for every combination of parts: train, eval, sample, figures, report
and resume from the command line; colour images and a user's own networks through the Python API; bad
combinations refused; a run folder's problems refused before training; a PNG export trains like its IDX files."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from vaekit import VAE, TrainConfig, evaluate, fit, log_likelihood, train_vae
from vaekit.checkpoint import CHECKPOINT, load_checkpoint, load_weights, save_weights
from vaekit.cli import main
from vaekit.commands.figures import write_run_figures
from vaekit.data import ImageData
from vaekit.report import write_report
from vaekit.runfolder import FIGURES, load_run

from helpers import mount_tmpfs

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"

COMBOS = {
    "mlp-bernoulli-iwae": ["--arch", "mlp", "--hidden", "32,16", "--latent-dim", "4", "--likelihood", "bernoulli",
                           "--binarize", "dynamic", "--objective", "iwae", "--iw-samples", "3", "--kl-warmup", "5"],
    "conv-cb-beta": ["--arch", "conv", "--num-filters", "4", "--depth", "2", "--likelihood", "continuous-bernoulli",
                     "--posterior", "diagonal", "--beta", "2", "--latent-dim", "3"],
    "assignment-gaussian-iwae": ["--num-filters", "2", "--objective", "iwae", "--iw-samples", "2", "--calibrated"],
}


@pytest.fixture(scope="module", params=sorted(COMBOS))
def combo_run(request, tmp_path_factory, tiny_dataset_dir):
    out = tmp_path_factory.mktemp(request.param) / "run"
    args = ["train", "--dataset", str(tiny_dataset_dir), "--batch-size", "32", "--max-steps", "6", "--epochs", "1",
            "--eval-samples", "2", "--checkpoint-every", "3", "--no-progress", "--out", str(out), *COMBOS[request.param]]
    assert main(args) == 0
    return request.param, out


def test_every_combination_trains_evaluates_samples_draws_and_reports(combo_run, capsys):
    name, run = combo_run
    meta = json.loads((run / "config.json").read_text())
    assert meta["model"]["arch"] == {"mlp": "mlp", "conv": "conv", "assignment": "assignment"}[name.split("-")[0]]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(rows[-1]["test_elbo"]) and math.isfinite(rows[-1]["train_elbo"])
    if "iwae" in name or "beta" in name:  # the training loss under its own name; "ELBO" stays the bound
        assert rows[-1]["objective"].startswith("iwae(k=" if "iwae" in name else "elbo with beta=2")
        assert math.isfinite(rows[-1]["train_objective"])
    assert main(["eval", str(run), "--k", "4", "--limit", "8", "--samples", "2", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["likelihood"] == meta["model"]["likelihood"] and math.isfinite(result["log_likelihood"])
    assert main(["sample", str(run), "--n", "4", "--out", str(run / "s.png")]) == 0 and (run / "s.png").stat().st_size > 0
    assert main(["figures", str(run)]) == 0
    assert all((run / f).stat().st_size > 0 for f in FIGURES)
    assert main(["report", str(run)]) == 0 and "log p(x)" in (run / "report.html").read_text()


def test_every_combination_resumes_to_the_uninterrupted_weights(combo_run, tmp_path, tiny_dataset_dir):
    """Resume from the mid-run checkpoint (step 3) of a copy: the same weights as the uninterrupted run."""
    name, run = combo_run
    _, final, _ = load_checkpoint(run)
    assert final.finished and final.step == 6
    model, _ = load_run(run)
    args = ["train", "--dataset", str(tiny_dataset_dir), "--batch-size", "32", "--max-steps", "3", "--epochs", "1",
            "--eval-samples", "2", "--no-progress", "--out", str(tmp_path / "half"), *COMBOS[name]]
    meta = json.loads((run / "config.json").read_text())
    assert main(args) == 0
    # a run stopped after step 3: the same 3 steps (the anneal schedule is flat that early), and its
    # config and checkpoint made the full run's, as a kill at step 3 would have left them
    half = tmp_path / "half"
    _, state, _ = load_checkpoint(half)
    assert state.step == 3
    cfg = json.loads((half / "config.json").read_text())
    cfg["train"]["max_steps"] = meta["train"]["max_steps"]
    (half / "config.json").write_text(json.dumps(cfg))
    _unfinish(half)
    assert main(["train", "--resume", str(half), "--no-progress"]) == 0
    resumed, _ = load_run(half)
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def _unfinish(run: Path) -> None:
    """Mark a finished checkpoint as not finished (what a kill before the end leaves)."""

    tensors, header = load_weights(run / CHECKPOINT)
    info = json.loads(header["vaekit"])
    info["finished"] = False
    info["config"]["train"]["max_steps"] = 6
    save_weights(run / CHECKPOINT, tensors, {"vaekit": json.dumps(info)})


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--arch", "conv", "--depth", "5"], "arch conv with depth 5 halves the image 5 times and needs at least 33x33 pixels, got 28x28"),
        (["--arch", "mlp", "--hidden", "20,x"], "hidden must be comma-separated positive layer widths such as 200,200, got '20,x'"),
    ],
)
def test_an_architecture_that_cannot_take_the_images_is_one_clear_line_and_writes_nothing(args, needle, tmp_path, tiny_dataset_dir, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_iw_samples_below_one_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--objective", "iwae", "--iw-samples", "0"])
    assert "--iw-samples: must be >= 1, got 0" in capsys.readouterr().err


def test_legacy_run_folder_evaluates_draws_reports_and_knows_it_finished(tmp_path, capsys):
    run = tmp_path / "legacy"
    shutil.copytree(FIXTURE_RUN, run)
    assert main(["eval", str(run), "--k", "3", "--limit", "5", "--samples", "1", "--no-progress"]) == 0
    assert main(["figures", str(run)]) == 0 and (run / "report.html").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "already finished (30 steps)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the Python API


class MyEncoder(nn.Module):
    """A user's own encoder: any module from images to the posterior's parameters."""

    def __init__(self, c, side, k):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c, 8, 4, stride=2, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, 2 * k))

    def forward(self, x):
        return self.net(x)


class MyDecoder(nn.Module):
    def __init__(self, c, side, k):
        super().__init__()
        self.c, self.side = c, side
        self.net = nn.Sequential(nn.Linear(k, 64), nn.SiLU(), nn.Linear(64, c * side * side))

    def forward(self, z):
        return self.net(z).view(-1, self.c, self.side, self.side)


def colour_data(n=96, side=16, seed=0):
    """Colour images with structure: a random colour times a random vertical gradient."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    ramp = torch.linspace(0, 1, side).view(1, 1, side, 1) ** (0.5 + 2 * torch.rand(n, 1, 1, 1, generator=g))
    images = (colour * ramp).expand(n, 3, side, side).contiguous()
    labels = (colour.view(n, 3).argmax(dim=1)).long()
    return images, labels


def test_a_users_own_networks_train_evaluate_and_draw_in_colour(tmp_path):
    images, labels = colour_data()
    torch.manual_seed(0)
    model = VAE(MyEncoder(3, 16, 4), MyDecoder(3, 16, 4), 4, likelihood="continuous-bernoulli", posterior="diagonal", image_shape=(3, 16, 16))
    elbos = train_vae(model, images[:64], epochs=3, n_samples=1, batch_size=16, lr=3e-3, progress=False, device="cpu")
    assert len(elbos) == 12 and elbos[-1] > elbos[0]
    fit(model, images[:64], TrainConfig(epochs=1, batch_size=16, objective="iwae", iw_samples=3, device="cpu"), progress=False)
    ll = log_likelihood(model, images[64:], k=16)
    result = evaluate(model, images[64:], k=16, n_samples=2)
    assert ll.shape == (32,) and result["log_likelihood"] >= result["elbo"] - 3 * result["elbo_se"]
    data = ImageData("colour", train_images=images[:64], train_labels=labels[:64], test_images=images[64:], test_labels=labels[64:])
    rows = [{"epoch": 1, "steps": 12, "train_elbo": elbos[-1], "test_elbo": result["elbo"], "test_elbo_se": result["elbo_se"]}]
    write_run_figures(model, data, TrainConfig(batch_size=16), tmp_path, rows, elbos)
    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "train": {}, "data": {"name": "colour"}}))
    html = write_report(tmp_path).read_text()
    assert all(f in html for f in ("samples.png", "reconstructions.png", "interpolations.png"))
    import matplotlib.image

    rgb = matplotlib.image.imread(tmp_path / "reconstructions.png")  # [H, W, 3 or 4] floats; the test images are in it
    assert abs(rgb[..., 0] - rgb[..., 2]).max() > 0.2  # in colour: channels differ


# ----------------------------------------------------------------------------- refused before training, and resuming a finished run


def test_read_only_output_folder_is_refused_up_front(tmp_path, capsys):
    from vaekit.cli import main

    ro = tmp_path / "ro"
    mount_tmpfs(ro, "ro,size=64k")
    try:
        code = main(["train", "--max-steps", "1", "--out", str(ro / "run"), "--no-progress"])
        err = capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)])
    assert code == 2
    assert str(ro / "run") in err and "Read-only" in err and "Traceback" not in err


def test_resume_of_a_finished_run_redraws_missing_figures_and_takes_device(uninterrupted, capsys):
    from vaekit.cli import main

    (uninterrupted / "samples.png").unlink()
    assert main(["train", "--resume", str(uninterrupted), "--device", "cpu", "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (uninterrupted / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_overwrite_removes_an_older_runs_checkpoint_before_training(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"an older run's checkpoint")

    def killed(*args, **kwargs):  # the new run dies before its first checkpoint
        raise OSError("killed before the first checkpoint")

    monkeypatch.setattr("vaekit.commands.train.fit", killed)
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert not (out / CHECKPOINT).exists()
    assert main(["train", "--resume", str(out)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_overwrite_removes_what_was_derived_from_the_older_model_and_nothing_else(tiny_dataset_dir, tmp_path, capsys):
    from vaekit.cli import main
    from vaekit.runfolder import DERIVED_FILES

    out = tmp_path / "run"
    out.mkdir()
    for name in (*DERIVED_FILES, "samples_gmm.png", "samples_seed3.png"):
        (out / name).write_bytes(b"the older model's")
    (out / "my_notes.txt").write_text("the user's own file")
    (out / "config.json").write_text("{}")  # an older run's folder (without it the files would be the user's, left alone)
    args = ["train", "--dataset", str(tiny_dataset_dir), "--out", str(out), "--overwrite", "--max-steps", "1", "--epochs", "1",
            "--num-filters", "4", "--eval-samples", "1", "--no-progress"]
    assert main(args) == 0
    assert f"--overwrite removed {len(DERIVED_FILES) + 2} files derived from the older model" in capsys.readouterr().out
    assert not any((out / n).exists() for n in (*DERIVED_FILES, "samples_gmm.png", "samples_seed3.png"))
    assert (out / "my_notes.txt").read_text() == "the user's own file" and (out / "report.html").exists()


def test_overwrite_of_a_folder_that_holds_no_run_removes_none_of_its_files(tiny_dataset_dir, tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "figures"
    out.mkdir()
    (out / "samples_mine.png").write_bytes(b"the user's own picture")
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--out", str(out), "--overwrite", "--max-steps", "1", "--epochs", "1",
                 "--num-filters", "4", "--eval-samples", "1", "--no-progress"]) == 0
    assert (out / "samples_mine.png").read_bytes() == b"the user's own picture"
    assert "--overwrite removed" not in capsys.readouterr().out


def test_a_png_export_of_mnist_trains_exactly_like_the_idx_files(tmp_path, tiny_dataset_dir, mnist):
    """The README's worked example: MNIST exported as PNGs in the IDX order trains to the same weights and test ELBO."""
    from vaekit.data import export_png

    pngs = export_png(mnist, tmp_path / "pngs", limit_train=256, limit_test=64)  # the images of tiny_dataset_dir
    runs = []
    for name, dataset in (("idx", tiny_dataset_dir), ("png", pngs)):
        out = tmp_path / name
        assert main(["train", "--dataset", str(dataset), "--batch-size", "32", "--max-steps", "5", "--epochs", "1",
                     "--num-filters", "4", "--eval-samples", "2", "--seed", "7", "--no-progress", "--out", str(out)]) == 0
        runs.append(out)
    rows = [json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) for run in runs]
    assert rows[0]["test_elbo"] == rows[1]["test_elbo"] and rows[0]["train_elbo"] == rows[1]["train_elbo"]
    (a, _), (b, _) = load_run(runs[0]), load_run(runs[1])
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
