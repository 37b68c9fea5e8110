"""Tests for vaekit.data.export: export_png writes folders that load back with the same bytes, labels and order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import ImageData, detect_format, export_png, load_dataset

from helpers import load_images


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_export_png_round_trips_grey_and_rgb(mnist, tmp_path, cache):
    export_png(mnist, tmp_path / "grey", limit_train=40, limit_test=12)
    back = load_images(tmp_path / "grey", cache)
    assert torch.equal(back.train_uint8, mnist.train_uint8[:40]) and torch.equal(back.test_labels, mnist.test_labels[:12])

    rng = np.random.default_rng(0)
    rgb = ImageData(
        "rgb",
        train_uint8=torch.from_numpy(rng.integers(0, 256, (20, 3, 9, 7), dtype=np.uint8)),
        test_uint8=torch.from_numpy(rng.integers(0, 256, (5, 3, 9, 7), dtype=np.uint8)),
    )  # unlabelled: files go straight into train/ and test/
    export_png(rgb, tmp_path / "rgb")
    assert sorted(p.name for p in (tmp_path / "rgb" / "test").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    back = load_images(tmp_path / "rgb", cache)
    assert torch.equal(back.train_uint8, rgb.train_uint8) and torch.equal(back.test_uint8, rgb.test_uint8)
    assert back.info.labelled is False and back.train_labels.eq(-1).all()


def test_export_png_from_vaekit_data_loads_back(mnist, tmp_path):
    folder = export_png(mnist, tmp_path / "png", limit_train=12, limit_test=4)
    assert folder == tmp_path / "png" and (folder / "train" / "5" / "00000.png").is_file()  # MNIST's first digit is a 5
    back = load_dataset(folder, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(back.train_uint8, mnist.train_uint8[:12]) and torch.equal(back.test_labels, mnist.test_labels[:4])
    assert detect_format(folder) == "image-folder"
