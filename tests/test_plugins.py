"""One toy part of every kind, added from a single file at run time (``--plugin``), runs end to end:
train, eval, sample, figures and report, each in a fresh process; the run records its plugin file so
that the later commands find the parts again without being told."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vaekit.registry import REGISTRIES, discover

from helpers import run_vaekit

TOY = Path(__file__).parent / "fixtures" / "toy_parts.py"
KINDS = {"arch": "toy-linear", "likelihood": "toy-laplace", "posterior": "toy-fixed", "prior": "toy-wide",
         "objective": "toy-free-nats", "dataset format": "toy-csv", "sampler": "toy-shrunk", "condition": "toy-parity"}


def vaekit(*args: str, cwd: Path, env_plugins: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VAEKIT_PLUGINS"}
    if env_plugins:
        env["VAEKIT_PLUGINS"] = env_plugins
    return run_vaekit(*args, cwd=cwd, env=env)


def test_the_toy_file_has_a_part_of_every_kind():
    assert set(KINDS) == set(discover())  # every kind vaekit has


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(60, 1))
    pixels = rng.integers(0, 256, size=(60, 64))
    np.savetxt(folder / "digits.toycsv", np.concatenate([labels, pixels], axis=1), fmt="%d", delimiter=",")
    args = ["--plugin", str(TOY), "train", "--dataset", "digits.toycsv", "--out", "run", "--arch", "toy-linear",
            "--no-bias", "--likelihood", "toy-laplace", "--posterior", "toy-fixed", "--prior", "toy-wide",
            "--prior-scale", "3", "--objective", "toy-free-nats", "--floor", "2.5", "--latent-dim", "2",
            "--condition", "toy-parity", "--batch-size", "16", "--epochs", "2", "--device", "cpu", "--no-progress", "--eval-samples", "2"]
    p = vaekit(*args, cwd=folder)
    assert p.returncode == 0, p.stderr
    return folder


def test_train_with_every_toy_part_writes_a_complete_run(toy_run):
    run = toy_run / "run"
    meta = json.loads((run / "config.json").read_text())
    assert meta["plugins"] == [str(TOY.resolve())]
    assert meta["model"] == {"arch": "toy-linear", "latent_dim": 2, "likelihood": "toy-laplace", "posterior": "toy-fixed",
                             "prior": "toy-wide", "condition": "toy-parity", "options": {"bias": False, "prior_scale": 3.0}}
    assert meta["train"]["objective"] == "toy-free-nats" and meta["train"]["options"] == {"samples": 1, "floor": 2.5}
    assert meta["data"]["info"]["source"] == "toy-csv" and meta["data"]["image_shape"] == [1, 8, 8]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["test_elbo"]) for r in rows)
    assert rows[-1]["objective"] == "toy-free-nats"
    for name in ("model.safetensors", "samples.png", "reconstructions.png", "report.html", "condition_grid.png"):
        assert (run / name).is_file(), name
    report = (run / "report.html").read_text()
    assert "toy-linear" in report and "prior_scale" in report and "vx-panel" in report  # the explorer ran the plugin's mean
    assert '<option value="1">odd</option>' in report  # and picks the plugin condition's choices


def test_eval_figures_and_report_find_the_plugin_from_the_run_folder(toy_run):
    for args in (["eval", "run", "--k", "20", "--limit", "5", "--json", "--no-progress", "--device", "cpu"],
                 ["figures", "run"], ["report", "run"]):
        p = vaekit(*args, cwd=toy_run)
        assert p.returncode == 0, (args, p.stderr)
    result = json.loads((toy_run / "run" / "eval_test.json").read_text())
    assert result["n_images"] == 5 and result["k"] == 20 and np.isfinite(result["log_likelihood"])


def test_a_plugin_sampler_draws_from_the_run(toy_run):
    p = vaekit("sample", "run", "--sampler", "toy-shrunk", "--shrink", "0.25", "--n", "9", cwd=toy_run, env_plugins=str(TOY))
    assert p.returncode == 0, p.stderr
    assert (toy_run / "run" / "samples_toy-shrunk.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_or_broken_plugin_is_one_clear_line(tmp_path):
    p = vaekit("--plugin", str(tmp_path / "nope.py"), "train", "--help", cwd=tmp_path)
    assert p.returncode == 2 and "plugin file" in p.stderr and "nope.py" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    p = vaekit("--plugin", str(bad), "train", "--help", cwd=tmp_path)
    assert p.returncode == 2 and "bad.py failed to load: RuntimeError: boom" in p.stderr


def test_registries_are_left_as_they_were():
    assert not any(name.startswith("toy-") for reg in REGISTRIES.values() for name in reg)
