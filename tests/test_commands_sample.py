"""`vaekit sample --out FILE`: a PNG grid, or a .npy of the images as uint8 [N, C, H, W] that equals
round(255 * clamp(mean images, 0, 1)) of the sampler's codes after the seed; any other suffix is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vaekit import generate_images, set_seed
from vaekit.cli import main
from vaekit.gmm import load_gmm
from vaekit.runfolder import RunFolder
from vaekit.samplers import decode_samples


@pytest.fixture(scope="module")
def run(uninterrupted, tmp_path_factory):
    copy = tmp_path_factory.mktemp("sample") / "run"
    shutil.copytree(uninterrupted, copy)  # the GMM sampler writes its files into the run folder
    return RunFolder(copy)


def reference_uint8(images: torch.Tensor) -> np.ndarray:
    return np.round(np.clip(images.double().numpy(), 0, 1) * 255).astype(np.uint8)


def test_npy_of_the_prior_is_the_quantized_mean_images_after_the_seed(run, tmp_path, capsys):
    out = tmp_path / "prior.npy"
    assert main(["sample", str(run.path), "--n", "20", "--seed", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "20 images from the prior sampler (seed 4) as uint8 [N, C, H, W] = round(255 * clamp(" in printed
    assert f"wrote {out}" in printed
    array = np.load(out, allow_pickle=False)
    assert array.dtype == np.uint8 and array.shape == (20, 1, 28, 28)
    model = run.load_model()  # before the seed: building it draws initial weights
    set_seed(4)
    np.testing.assert_array_equal(array, reference_uint8(generate_images(model, n_images=20)))


def test_npy_of_the_gmm_is_its_seeded_codes_decoded_and_quantized(run, tmp_path):
    out = tmp_path / "gmm.npy"
    assert main(["sample", str(run.path), "--sampler", "gmm", "--components", "2", "--n", "12", "--seed", "1", "--out", str(out)]) == 0
    z = load_gmm(run / "gmm.safetensors").sample(12, torch.Generator().manual_seed(1))  # [12, K]
    np.testing.assert_array_equal(np.load(out), reference_uint8(decode_samples(run.load_model(), z)))


def test_png_still_writes_a_grid(run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", str(run.path), "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["x.jpg", "x.npz", "x"])
def test_another_suffix_is_one_clear_error_and_writes_nothing(run, tmp_path, capsys, name):
    assert main(["sample", str(run.path), "--n", "4", "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert f"out (--out) must end in .png (a grid) or .npy (a uint8 array [N, C, H, W]), got '{tmp_path / name}'" in err
    assert list(tmp_path.iterdir()) == []
