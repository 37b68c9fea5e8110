"""Tests for vaekit.data.formats.named: the shipped MNIST (MD5-verified) and Fashion-MNIST.

MNIST comes from the session's ``mnist`` fixture, cached once under the tests' VAEKIT_CACHE
(conftest.py); tests that tamper with a cache get a private copy (``mnist_cache_copy``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit.data.formats.named as named
from vaekit.data import MNIST_MD5, DataConfig, DatasetError, conform_uint8, load_dataset, mnist_files, read_idx

from helpers import IDX_NAMES, make_idx_folder

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SHIPPED_MD5 = {  # of the decompressed content, as published with MNIST
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


def sample_mnist(folder: Path, monkeypatch) -> str:
    """MNIST itself (cached in the session): for the contract test of every format."""
    return "mnist"


def sample_fashion_mnist(folder: Path, monkeypatch) -> str:
    """A tiny "Fashion-MNIST" installed where the Debian package would be: for the contract test."""
    make_idx_folder(folder, gz=True)
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    return "fashion-mnist"


SAMPLES = {"mnist": sample_mnist, "fashion-mnist": sample_fashion_mnist}


def entry(cache: Path, mnist) -> Path:
    """The MNIST entry in the cache folder ``cache`` (the same name as the session's)."""
    return cache / "imports" / Path(mnist.info.cache).name


# ----------------------------------------------------------------------------- real MNIST


def test_mnist_shapes_dtypes_and_range(mnist):
    assert mnist.name == "mnist"
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.test_labels.shape == (10000,)
    assert mnist.train_images.dtype == torch.float32
    assert mnist.test_images.dtype == torch.float32
    assert mnist.train_labels.dtype == torch.int64
    assert mnist.test_labels.dtype == torch.int64
    for images in (mnist.train_images, mnist.test_images):
        assert images.min().item() == 0.0
        assert images.max().item() == 1.0


def test_mnist_label_histograms_match_published_counts(mnist):
    assert torch.bincount(mnist.train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixel_statistics(mnist):
    assert mnist.train_images.mean().item() == pytest.approx(0.1307, abs=1e-3)
    assert mnist.train_images.std().item() == pytest.approx(0.3081, abs=1e-3)


def test_mnist_pixels_are_bytes_over_255(mnist):
    # Every value is k/255 for an integer k: no resampling or normalisation.
    k = mnist.test_images * 255.0
    assert torch.equal(k, k.round())


def test_mnist_files_are_the_shipped_gz_files():
    files = mnist_files()
    assert set(files) == set(IDX_NAMES)
    for role, path in files.items():
        assert path.name == IDX_NAMES[role] + ".gz"
        assert path.is_file()
        assert hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest() == SHIPPED_MD5[path.name]
    assert MNIST_MD5 == SHIPPED_MD5


def test_mnist_uint8_route_gives_the_same_floats_bit_for_bit(mnist):
    files = mnist_files()
    for split, role in (("train", "train_images"), ("test", "test_images")):
        raw = read_idx(files[role])  # [N, 28, 28] uint8, straight from the shipped file
        u8 = getattr(mnist, f"{split}_uint8")
        assert u8.dtype == torch.uint8 and u8.shape == (len(raw), 1, 28, 28)
        assert torch.equal(u8[:, 0], torch.from_numpy(raw))
        # what load_dataset returned before ImageData held bytes
        before = torch.from_numpy(raw).reshape(len(raw), 1, 28, 28).to(torch.float32).div_(255.0)
        after = getattr(mnist, f"{split}_images")
        assert after.dtype == torch.float32 and torch.equal(after, before)
        assert after is getattr(mnist, f"{split}_images")  # computed once, then kept


def test_mnist_info(mnist):
    info = mnist.info
    assert (info.source, info.split, info.labelled, info.classes) == ("mnist", "given", True, None)
    assert info.path == str(mnist_files()["train_images"].parent)
    assert (info.image_size, info.channels, info.train, info.test) == ([28, 28], 1, 60000, 10000)
    assert info.image_size_rule == info.channels_rule == "from the data"
    assert info.test_fraction is None and info.split_seed is None and info.skipped == 0 and info.skipped_files == []


def test_cached_mnist_is_memory_mapped_without_warnings(mnist, mnist_cache_copy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed a read-only array
        again = load_dataset("mnist", cache_dir=mnist_cache_copy)
    npy = entry(mnist_cache_copy, mnist) / "test.npy"
    offset = npy.stat().st_size - again.test_uint8.numel()
    with open(npy, "r+b") as fh:  # a change to the file shows through a memory map, not through a copy
        fh.seek(offset)
        fh.write(bytes([99]))
    assert again.test_uint8[0, 0, 0, 0].item() == 99
    assert mnist.test_uint8[0, 0, 0, 0].item() == 0
    assert again.info.source == "mnist" and again.info.split == "given" and again.info.labelled


def test_missing_shipped_file_is_reported(tmp_path, monkeypatch):
    real = mnist_files()
    gone = tmp_path / "nowhere" / "t10k-images-idx3-ubyte.gz"
    monkeypatch.setattr(named, "mnist_files", lambda: {**real, "test_images": gone})
    with pytest.raises(DatasetError, match="shipped MNIST files are missing") as err:
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert str(gone) in str(err.value)


def test_checksum_table_change_invalidates_cache(mnist_cache_copy, monkeypatch):
    wrong = "0123456789abcdef0123456789abcdef"
    monkeypatch.setitem(MNIST_MD5, "t10k-labels-idx1-ubyte.gz", wrong)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", cache_dir=mnist_cache_copy)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert wrong in msg
    assert "27ae3e4e09519cfbb04c329615203637" in msg  # the actual md5


def test_modified_mnist_file_fails_md5_even_after_being_cached(mnist, mnist_cache_copy, tmp_path, monkeypatch):
    real = mnist_files()
    copy = tmp_path / "train-labels-idx1-ubyte.gz"
    shutil.copy2(real["train_labels"], copy)
    monkeypatch.setattr(named, "mnist_files", lambda: {**real, "train_labels": copy})

    # The unmodified copy verifies and gets cached under its own path.
    first = load_dataset("mnist", cache_dir=mnist_cache_copy)
    manifest = json.loads((entry(mnist_cache_copy, mnist) / "manifest.json").read_text())
    assert str(copy.resolve()) in [f[0] for f in manifest["files"]]

    # Change one label, keep gzip valid, move the mtime on as an edit would.
    raw = bytearray(gzip.decompress(copy.read_bytes()))
    raw[8] = (raw[8] + 1) % 10
    copy.write_bytes(gzip.compress(bytes(raw)))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", cache_dir=mnist_cache_copy)
    msg = str(err.value)
    assert str(copy) in msg
    assert "MD5" in msg
    assert SHIPPED_MD5["train-labels-idx1-ubyte.gz"] in msg
    assert hashlib.md5(bytes(raw)).hexdigest() in msg
    # The cache still holds the verified labels, not the modified ones.
    cached = np.load(entry(mnist_cache_copy, mnist) / "train-labels.npy")
    assert np.array_equal(cached, first.train_labels.numpy())


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "missing" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "not-installed") in msg
    assert "folder" in msg


def test_fashion_mnist_incomplete_install(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    make_idx_folder(folder, gz=True)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert "train-images-idx3-ubyte" in str(err.value)


def test_fashion_mnist_loads_and_caches(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"  # same layout as Debian's package: four .gz files
    arrays = make_idx_folder(folder, gz=True)
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    cache = tmp_path / "cache"
    ds = load_dataset("fashion-mnist", cache_dir=cache)
    assert ds.name == "fashion-mnist" and ds.info.source == "fashion-mnist" and ds.info.cache_status == "imported"
    assert ds.train_labels.tolist() == arrays["train_labels"].tolist()
    assert torch.equal(ds.test_uint8[:, 0], torch.from_numpy(arrays["test_images"]))
    stored = Path(ds.info.cache)
    assert stored.parent == cache / "imports" and (stored / "train.npy").is_file() and (stored / "manifest.json").is_file()
    again = load_dataset("fashion-mnist", cache_dir=cache)
    assert again.info.cache_status == "reused"
    assert torch.equal(again.train_images, ds.train_images)


def test_named_set_with_options_is_converted_like_image_files_and_cached_apart(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    arrays = make_idx_folder(folder, gz=True, hw=(6, 8))
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    plain = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    small = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache", config=DataConfig(image_size=4, channels=3))
    assert small.train_uint8.shape == (5, 3, 4, 4) and small.info.image_size_rule == small.info.channels_rule == "given"
    assert torch.equal(small.test_uint8, conform_uint8(plain.test_uint8, 4, 3))
    assert torch.equal(plain.test_uint8[:, 0], torch.from_numpy(arrays["test_images"]))
    assert small.info.cache != plain.info.cache and small.info.cache_status == "imported"  # other options, another entry
    assert load_dataset("fashion-mnist", cache_dir=tmp_path / "cache").info.cache_status == "reused"


@pytest.mark.skipif(not Path(named.FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(tmp_path):
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train_labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels, minlength=10).tolist() == [1000] * 10
