"""Tests for vaekit.data.formats.idx: a folder with the four IDX files, read directly (not cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import DataConfig, DatasetError, load_dataset

from helpers import IDX_NAMES, make_idx_folder, write_idx


def sample_idx(folder: Path, monkeypatch) -> Path:
    """A tiny IDX folder (5 train and 3 test images of 6x8), for the contract test of every format."""
    make_idx_folder(folder, hw=(6, 8))
    return folder


SAMPLES = {"idx": sample_idx}


def test_raw_folder_dataset_loads_exact_values(tmp_path):
    folder = tmp_path / "tiny"
    arrays = make_idx_folder(folder, n_train=5, n_test=3, gz=False)
    ds = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert ds.name == str(folder)
    assert ds.train_images.shape == (5, 1, 28, 28)
    assert ds.test_images.shape == (3, 1, 28, 28)
    assert ds.train_images.dtype == torch.float32
    assert ds.train_labels.dtype == torch.int64
    assert ds.train_images[0, 0, 0, 0].item() == 1.0  # 255 -> 1.0 exactly
    assert ds.train_images[0, 0, 0, 1].item() == 0.0
    expected = torch.from_numpy(arrays["test_images"]).float().div(255).unsqueeze(1)
    assert torch.equal(ds.test_images, expected)
    assert ds.train_labels.tolist() == arrays["train_labels"].tolist()
    assert ds.test_labels.tolist() == arrays["test_labels"].tolist()
    # folders are not cached
    assert not (tmp_path / "cache").exists()


def test_gz_folder_dataset_with_pathlike_and_other_image_size(tmp_path):
    folder = tmp_path / "gz"
    arrays = make_idx_folder(folder, n_train=4, n_test=2, hw=(7, 9), gz=True)
    ds = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (4, 1, 7, 9)
    assert ds.test_images.shape == (2, 1, 7, 9)
    assert ds.train_labels.tolist() == arrays["train_labels"].tolist()


def test_folder_with_dotted_file_names(tmp_path):
    folder = tmp_path / "dotted"
    make_idx_folder(folder)
    for base in IDX_NAMES.values():
        (folder / base).rename(folder / base.replace("-idx", ".idx", 1))
    ds = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert len(ds.train_labels) == 5


def test_labels_outside_0_to_9_do_not_crash(tmp_path):
    folder = tmp_path / "odd-labels"
    make_idx_folder(folder)
    write_idx(folder / IDX_NAMES["train_labels"], np.array([0, 200, 255, 3, 10], dtype=np.uint8))
    ds = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert ds.train_labels.tolist() == [0, 200, 255, 3, 10]


def test_image_label_count_mismatch_names_both_files(tmp_path):
    folder = tmp_path / "mismatch"
    make_idx_folder(folder, n_train=5)
    labels = write_idx(folder / IDX_NAMES["train_labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "count mismatch" in msg
    assert str(folder / IDX_NAMES["train_images"]) in msg and "5 images" in msg
    assert str(labels) in msg and "4 labels" in msg


def test_labels_with_wrong_ndim(tmp_path):
    folder = tmp_path / "labels3d"
    make_idx_folder(folder, n_test=3)
    labels = write_idx(folder / IDX_NAMES["test_labels"], np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(labels) in msg
    assert "(3, 28, 28)" in msg and "expected 1 dimension" in msg


def test_images_with_wrong_ndim(tmp_path):
    folder = tmp_path / "images2d"
    make_idx_folder(folder, n_train=5)
    images = write_idx(folder / IDX_NAMES["train_images"], np.zeros((5, 784), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(images) in msg
    assert "(5, 784)" in msg and "expected 3 dimensions" in msg


def test_train_test_image_size_mismatch(tmp_path):
    folder = tmp_path / "sizes"
    make_idx_folder(folder, n_test=3)
    write_idx(folder / IDX_NAMES["test_images"], np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DatasetError, match="image size mismatch") as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert "28x28" in str(err.value) and "32x32" in str(err.value)


def test_malformed_file_in_folder_is_named(tmp_path):
    folder = tmp_path / "broken"
    make_idx_folder(folder)
    bad = folder / IDX_NAMES["test_images"]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated IDX payload") as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert str(bad) in str(err.value)


def test_folder_missing_a_file(tmp_path):
    folder = tmp_path / "incomplete"
    make_idx_folder(folder)
    (folder / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(folder) in msg and "t10k-labels-idx1-ubyte" in msg


def test_idx_folder_info_and_options(tmp_path):
    arrays = make_idx_folder(tmp_path / "idx", hw=(6, 8))
    loaded = load_dataset(tmp_path / "idx", config=DataConfig(image_size=4, channels=3))
    assert loaded.train_uint8.shape == (5, 3, 4, 4) and loaded.info.source == "idx"
    assert loaded.info.image_size == [4, 4] and loaded.info.channels == 3 and loaded.info.cache is None
    plain = load_dataset(tmp_path / "idx")
    assert torch.equal(plain.train_uint8[:, 0], torch.from_numpy(arrays["train_images"]))
