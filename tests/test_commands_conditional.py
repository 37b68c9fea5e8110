"""Conditional runs through every command, as the README's section "Conditional generation" writes them: each of its
commands runs (on a tiny MNIST folder, a few steps), and the label run trains, evaluates log p(x | y), samples a class
(.png and uint8 .npy) and every class, and draws its class grid and a report with the class picker; the quadrants
run evaluates log p(x_missing | x_given) over the missing pixels and draws completions. ``vaekit train --help`` names
the condition kind."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from helpers import run_vaekit

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The vaekit commands of the README's section on conditional generation, in order."""
    text = README.read_text()
    section = text[text.index("### Conditional generation") :]
    section = section[: section.index("\n### ", 5)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("vaekit ")]


def small(args: list[str], dataset: Path) -> list[str]:
    """A README command made quick: a few steps on the tiny folder, a small network, few importance samples."""
    args = list(args[1:])
    if args[0] == "train":
        budget = args.index("--time-budget")
        args[budget : budget + 2] = ["--max-steps", "8", "--epochs", "1"]
        args += ["--dataset", str(dataset), "--hidden", "16", "--batch-size", "32", "--eval-samples", "1", "--device", "cpu", "--no-progress"]
    if args[0] == "eval":
        args[args.index("--k") + 1] = "5"
        args += ["--limit", "10", "--device", "cpu", "--no-progress", "--json"]
    return args


@pytest.fixture(scope="module")
def readme_runs(tiny_dataset_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    outputs = []
    commands = readme_commands()
    assert [c[1] for c in commands] == ["train", "sample", "sample", "sample", "train", "eval", "sample"], commands
    for command in commands:
        p = run_vaekit(*small(command, tiny_dataset_dir), cwd=folder)
        assert p.returncode == 0, (command, p.stderr)
        outputs.append(p.stdout)
    return folder, outputs


def test_every_class_as_npy_says_how_many_images_it_wrote(tiny_dataset_dir, tmp_path):
    from vaekit.cli import main

    run = tmp_path / "cvae"
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--condition", "label", "--arch", "mlp", "--hidden", "8", "--latent-dim", "2",
                 "--max-steps", "1", "--epochs", "1", "--eval-samples", "1", "--device", "cpu", "--no-progress", "--out", str(run)]) == 0
    p = run_vaekit("sample", str(run), "--n", "25", "--out", str(tmp_path / "all.npy"))
    assert p.returncode == 0, p.stderr
    assert np.load(tmp_path / "all.npy").shape == (20, 1, 28, 28)  # 10 classes x 25 // 10 draws of z
    assert "20 images from the prior sampler" in p.stdout


@pytest.mark.slow  # seven vaekit processes, two of them training: ~1 min on the 2-core CPU
def test_the_label_run_trains_samples_a_class_and_every_class(readme_runs):
    folder, _ = readme_runs
    run = folder / "runs" / "cvae"
    meta = json.loads((run / "config.json").read_text())
    assert meta["model"]["condition"] == "label" and meta["model"]["options"]["classes"] == 10
    assert json.loads(meta["model"]["options"]["class_names"]) == [str(i) for i in range(10)]
    for name in ("class_grid.png", "samples.png", "reconstructions.png", "latent_map.png", "interpolations.png", "report.html"):
        assert (run / name).is_file(), name
    sevens = np.load(folder / "sevens.npy")
    assert sevens.shape == (16, 1, 28, 28) and sevens.dtype == np.uint8
    assert (folder / "sevens.png").read_bytes()[:4] == (folder / "every-class.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.html").read_text()
    assert '<select id="vx-condition">' in report and "Every class" in report
    p = run_vaekit("sample", str(run), "--label", "dog", cwd=folder)
    assert p.returncode == 2 and "--label 'dog' is not a class" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_the_quadrants_run_evaluates_the_missing_pixels_and_draws_completions(readme_runs):
    folder, outputs = readme_runs
    run = folder / "runs" / "half"
    result = json.loads(outputs[5])
    assert result["condition"]["quantity"] == "log p(x_missing | x_given)" and result["dims"] == 392  # the right half
    assert np.isfinite(result["log_likelihood"]) and result["k"] == 5
    assert (run / "completions.png").is_file() and (folder / "completions-of-test-image-3.png").is_file()
    p = run_vaekit("figures", str(run), cwd=folder)
    assert p.returncode == 0, p.stderr
    assert "log p(x_missing | x_given)" in (run / "report.html").read_text()


def test_train_help_names_the_condition_kind():
    p = run_vaekit("train", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "--condition {label,quadrants}" in text and "label: the image's class, one-hot" in text
    assert "--quadrants {1,2,3}" in text and "--classes CLASSES" in text
