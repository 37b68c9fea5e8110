"""Tests for vaekit.data.formats.arrays: .npy and .npz files of images, their layouts, dtypes and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import DatasetError

from helpers import load_images


def sample_npy(folder: Path, monkeypatch) -> Path:
    """A tiny .npy of 10 grey 5x6 images (split at random), for the contract test of every format."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "tiny.npy", np.random.default_rng(0).integers(0, 256, (10, 5, 6), dtype=np.uint8))
    return folder / "tiny.npy"


def sample_npz(folder: Path, monkeypatch) -> Path:
    """A tiny labelled .npz (x_train, x_test, y_train, y_test; RGB 4x4), for the contract test of every format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    np.savez(folder / "tiny.npz", x_train=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
             x_test=rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8), y_train=np.arange(6), y_test=np.arange(2))
    return folder / "tiny.npz"


SAMPLES = {"npy": sample_npy, "npz": sample_npz}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def layouts(u8: np.ndarray) -> dict[str, np.ndarray]:
    """[N, C, H, W] -> the three accepted layouts (NHW only for C = 1)."""
    out = {"nchw": u8, "nhwc": u8.transpose(0, 2, 3, 1).copy()}
    if u8.shape[1] == 1:
        out["nhw"] = u8[:, 0].copy()
    return out


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_x_train_x_test_in_each_layout(mnist, tmp_path, cache, layout):
    tr, te = mnist.train_uint8[:30].numpy(), mnist.test_uint8[:10].numpy()
    np.savez(tmp_path / "d.npz", x_train=layouts(tr)[layout], x_test=layouts(te)[layout],
             y_train=mnist.train_labels[:30].numpy(), y_test=mnist.test_labels[:10].numpy())
    data = load_images(tmp_path / "d.npz", cache)
    assert torch.equal(data.train_uint8, mnist.train_uint8[:30]) and torch.equal(data.test_uint8, mnist.test_uint8[:10])
    assert torch.equal(data.test_labels, mnist.test_labels[:10]) and data.info.source == "npz"


def test_npz_rgb_floats_train_test_keys(tmp_path, cache):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "c.npz", train=(u8[:9].transpose(0, 2, 3, 1) / 255.0).astype(np.float32),
                        test=(u8[9:].transpose(0, 2, 3, 1) / 255.0))
    data = load_images(tmp_path / "c.npz", cache)
    assert torch.equal(data.train_uint8, torch.from_numpy(u8[:9])) and torch.equal(data.test_uint8, torch.from_numpy(u8[9:]))
    assert data.info.labelled is False and data.info.channels == 3
    grey = load_images(tmp_path / "c.npz", cache, channels=1, image_size=4)
    assert grey.train_uint8.shape == (9, 1, 4, 4)


def test_npz_images_and_npy_are_split_by_seed(mnist, tmp_path, cache):
    u8 = mnist.train_uint8[:50].numpy()
    np.savez(tmp_path / "i.npz", images=u8, labels=mnist.train_labels[:50].numpy())
    np.save(tmp_path / "i.npy", u8)
    a, b = load_images(tmp_path / "i.npz", cache), load_images(tmp_path / "i.npy", cache)
    assert (len(a.train_uint8), len(a.test_uint8)) == (45, 5) and a.info.split == "seeded"
    assert torch.equal(a.test_uint8, b.test_uint8) and torch.equal(a.train_uint8, b.train_uint8)
    assert a.info.labelled and not b.info.labelled
    index = [i for i in range(50) if any(torch.equal(mnist.train_uint8[i], t) for t in a.test_uint8)]
    assert torch.equal(a.test_labels, mnist.train_labels[index])


@pytest.mark.parametrize(
    "arrays,needles",
    [
        ({"pictures": np.zeros((4, 8, 8), np.uint8)}, ["keys pictures", "x_train + x_test"]),
        ({"x_train": np.zeros((4, 8, 8), np.uint8)}, ["keys x_train", "expected"]),
        ({"images": np.zeros((10, 8), np.uint8)}, ["'images'", "shape (10, 8)", "[N, H, W]"]),
        ({"images": np.zeros((10, 8, 8, 5), np.uint8)}, ["shape (10, 8, 8, 5)", "C = 1 or 3"]),
        ({"images": np.full((10, 8, 8), 2.0)}, ["float64 values in [2.0, 2.0]", "floats in [0, 1]"]),
        ({"images": np.full((10, 8, 8), np.nan, np.float32)}, ["NaN"]),
        ({"images": np.zeros((10, 8, 8), np.int16)}, ["int16", "uint8 in 0-255"]),
        ({"images": np.zeros((10, 8, 8), np.uint8), "labels": np.zeros(9, np.int64)}, ["labels have shape (9,)", "[10]"]),
        ({"x_train": np.zeros((4, 8, 8), np.uint8), "x_test": np.zeros((2, 8, 8), np.uint8), "y_train": np.zeros(4, np.int64)}, ["some splits only"]),
        ({"x_train": np.zeros((4, 8, 8), np.uint8), "x_test": np.zeros((0, 8, 8), np.uint8)}, ["test split is empty"]),
    ],
)
def test_bad_array_files_name_the_file_what_was_found_and_what_is_expected(tmp_path, cache, arrays, needles):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError) as err:
        load_images(tmp_path / "bad.npz", cache)
    msg = str(err.value)
    assert str(tmp_path / "bad.npz") in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_not_an_npz_file(tmp_path, cache):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .npz file"):
        load_images(tmp_path / "x.npz", cache)
