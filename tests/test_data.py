"""Tests for vaekit.data: IDX parsing, dataset loading, the array cache, download.

The real MNIST files are decompressed and MD5-checked once per module (the
``mnist_cache`` fixture); other tests reuse or copy that cache.  Every test
uses its own cache folder, never the user's.  Network tests only talk to
servers on 127.0.0.1 started here.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import math
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vaekit.data as data
from helpers import DTYPES, grey_images
from vaekit.config import DataConfig
from vaekit.data import BINARIZE_SEED, DatasetError, ImageData, binarize, load_dataset, read_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
BASENAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CACHE_KEYS = ["mnist-train-images", "mnist-train-labels", "mnist-test-images", "mnist-test-labels"]


# --------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Serialise ``array`` as IDX (header + raw bytes)."""
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_folder_dataset(folder: Path, *, n_train=5, n_test=3, hw=(28, 28), gz=False, seed=0):
    """Write a small MNIST-style dataset; return its arrays by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255
    arrays["train_images"][0, 0, 1] = 0
    folder.mkdir(parents=True, exist_ok=True)
    for role, base in BASENAMES.items():
        write_idx(folder / (base + (".gz" if gz else "")), arrays[role], gz=gz)
    return arrays


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path, monkeypatch):
    """Safety net: a test that forgets cache_dir still never touches ~/.cache."""
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    """A cache folder holding verified MNIST arrays, and the data of that first load."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    loaded = load_dataset("mnist", cache_dir=cache)
    return cache, loaded


@pytest.fixture
def real_mnist(mnist_cache) -> ImageData:
    return mnist_cache[1]


@pytest.fixture
def cache_copy(mnist_cache, tmp_path) -> Path:
    """A private copy of the verified MNIST cache, free to tamper with."""
    dst = tmp_path / "cache"
    shutil.copytree(mnist_cache[0], dst)
    return dst


# --------------------------------------------------------------------------
# real MNIST
# --------------------------------------------------------------------------


def test_mnist_shapes_dtypes_and_range(real_mnist):
    assert real_mnist.name == "mnist"
    assert real_mnist.train_images.shape == (60000, 1, 28, 28)
    assert real_mnist.train_labels.shape == (60000,)
    assert real_mnist.test_images.shape == (10000, 1, 28, 28)
    assert real_mnist.test_labels.shape == (10000,)
    assert real_mnist.train_images.dtype == torch.float32
    assert real_mnist.test_images.dtype == torch.float32
    assert real_mnist.train_labels.dtype == torch.int64
    assert real_mnist.test_labels.dtype == torch.int64
    for images in (real_mnist.train_images, real_mnist.test_images):
        assert images.min().item() == 0.0
        assert images.max().item() == 1.0


def test_mnist_label_histograms_match_published_counts(real_mnist):
    assert torch.bincount(real_mnist.train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(real_mnist.test_labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixel_statistics(real_mnist):
    assert real_mnist.train_images.mean().item() == pytest.approx(0.1307, abs=1e-3)
    assert real_mnist.train_images.std().item() == pytest.approx(0.3081, abs=1e-3)


def test_mnist_pixels_are_bytes_over_255(real_mnist):
    # Every value is k/255 for an integer k: no resampling or normalisation.
    k = real_mnist.test_images * 255.0
    assert torch.equal(k, k.round())


def test_mnist_files_are_the_shipped_gz_files():
    files = data.mnist_files()
    assert set(files) == set(BASENAMES)
    for role, path in files.items():
        assert path.name == BASENAMES[role] + ".gz"
        assert path.is_file()
        assert path.name in data.MNIST_MD5


def test_first_load_writes_verified_npy_cache(mnist_cache):
    cache, _ = mnist_cache
    files = data.mnist_files()
    for key, role in zip(CACHE_KEYS, BASENAMES):
        array = np.load(cache / f"{key}.npy")
        assert array.dtype == np.uint8
        meta = json.loads((cache / f"{key}.json").read_text())
        assert meta["md5"] == data.MNIST_MD5[BASENAMES[role] + ".gz"]
        assert meta["source"] == str(files[role].resolve())
        assert meta["source_size"] == files[role].stat().st_size
        assert meta["shape"] == list(array.shape)
        assert (cache / f"{key}.npy").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    # no temp files left behind by the atomic writes
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{k}.{ext}" for k in CACHE_KEYS for ext in ("npy", "json")
    )


def test_cached_load_is_identical_fast_and_skips_gunzip_and_md5(real_mnist, cache_copy, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a cached load must not gunzip or hash")

    monkeypatch.setattr(data.gzip, "decompress", forbidden)
    monkeypatch.setattr(data.hashlib, "md5", forbidden)
    start = time.perf_counter()
    again = load_dataset("mnist", cache_dir=cache_copy)
    elapsed = time.perf_counter() - start
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(real_mnist, field)), field
    assert elapsed < 1.0, f"cached MNIST load took {elapsed:.2f} s"


def test_cache_entry_is_trusted_only_while_the_sidecar_matches(real_mnist, cache_copy):
    npy = cache_copy / "mnist-test-labels.npy"
    sidecar = cache_copy / "mnist-test-labels.json"
    tampered = np.load(npy)
    tampered[:] = 7
    np.save(npy, tampered)
    # Sidecar still matches the source: the cache is read as is (no re-verify).
    assert (load_dataset("mnist", cache_dir=cache_copy).test_labels == 7).all()

    # A changed source identity forces a re-read and re-verification.
    meta = json.loads(sidecar.read_text())
    meta["source_size"] += 1
    sidecar.write_text(json.dumps(meta))
    assert torch.equal(load_dataset("mnist", cache_dir=cache_copy).test_labels, real_mnist.test_labels)
    rewritten = json.loads(sidecar.read_text())
    assert rewritten["source_size"] == data.mnist_files()["test_labels"].stat().st_size
    assert np.array_equal(np.load(npy), real_mnist.test_labels.numpy())


@pytest.mark.parametrize(
    "damage",
    ["sidecar-md5", "sidecar-garbage", "sidecar-missing", "npy-garbage", "npy-wrong-shape"],
)
def test_damaged_cache_entries_are_rebuilt(real_mnist, cache_copy, damage):
    npy = cache_copy / "mnist-test-labels.npy"
    sidecar = cache_copy / "mnist-test-labels.json"
    if damage == "sidecar-md5":
        meta = json.loads(sidecar.read_text())
        meta["md5"] = "0" * 32
        sidecar.write_text(json.dumps(meta))
    elif damage == "sidecar-garbage":
        sidecar.write_text("{not json")
    elif damage == "sidecar-missing":
        sidecar.unlink()
    elif damage == "npy-garbage":
        npy.write_bytes(b"garbage")
    elif damage == "npy-wrong-shape":
        np.save(npy, np.zeros(5, dtype=np.uint8))
    loaded = load_dataset("mnist", cache_dir=cache_copy)
    assert torch.equal(loaded.test_labels, real_mnist.test_labels)
    assert json.loads(sidecar.read_text())["md5"] == data.MNIST_MD5["t10k-labels-idx1-ubyte.gz"]
    assert np.array_equal(np.load(npy), real_mnist.test_labels.numpy())


def test_checksum_table_change_invalidates_cache(cache_copy, monkeypatch):
    wrong = "0123456789abcdef0123456789abcdef"
    monkeypatch.setitem(data.MNIST_MD5, "t10k-labels-idx1-ubyte.gz", wrong)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", cache_dir=cache_copy)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert wrong in msg
    assert "27ae3e4e09519cfbb04c329615203637" in msg  # the actual md5


def test_modified_mnist_file_fails_md5_even_after_being_cached(cache_copy, tmp_path, monkeypatch):
    real = data.mnist_files()
    copy = tmp_path / "train-labels-idx1-ubyte.gz"
    shutil.copy2(real["train_labels"], copy)
    monkeypatch.setattr(data, "mnist_files", lambda: {**real, "train_labels": copy})

    # The unmodified copy verifies and gets cached under its own path.
    first = load_dataset("mnist", cache_dir=cache_copy)
    sidecar = cache_copy / "mnist-train-labels.json"
    assert json.loads(sidecar.read_text())["source"] == str(copy.resolve())

    # Change one label, keep gzip valid, move the mtime on as an edit would.
    raw = bytearray(gzip.decompress(copy.read_bytes()))
    raw[8] = (raw[8] + 1) % 10
    copy.write_bytes(gzip.compress(bytes(raw)))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", cache_dir=cache_copy)
    msg = str(err.value)
    assert str(copy) in msg
    assert "MD5" in msg
    assert data.MNIST_MD5["train-labels-idx1-ubyte.gz"] in msg
    assert hashlib.md5(bytes(raw)).hexdigest() in msg
    # The cache still holds the verified labels, not the modified ones.
    cached = np.load(cache_copy / "mnist-train-labels.npy")
    assert np.array_equal(cached, first.train_labels.numpy())


def test_missing_shipped_file_is_reported(tmp_path, monkeypatch):
    real = data.mnist_files()
    gone = tmp_path / "nowhere" / "t10k-images-idx3-ubyte.gz"
    monkeypatch.setattr(data, "mnist_files", lambda: {**real, "test_images": gone})
    with pytest.raises(DatasetError, match="shipped MNIST files are missing") as err:
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert str(gone) in str(err.value)


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------


GOOD_IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    path = write_idx(tmp_path / "x.idx", GOOD_IMAGES, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 4)
    assert np.array_equal(out, GOOD_IMAGES)
    out[0, 0, 0] = 9  # writable
    assert read_idx(str(path)).shape == (2, 3, 4)  # str paths work too


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    payload = idx_bytes(GOOD_IMAGES)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(payload)
    gz_named_raw = tmp_path / "compressed-idx3-ubyte"
    gz_named_raw.write_bytes(gzip.compress(payload))
    assert np.array_equal(read_idx(raw_named_gz), GOOD_IMAGES)
    assert np.array_equal(read_idx(gz_named_raw), GOOD_IMAGES)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_read_idx_roundtrip_property(shape, gz, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_idx(Path(tmp) / "a", array, gz=gz)
        out = read_idx(path)
    assert out.shape == tuple(shape)
    assert np.array_equal(out, array)


def _bad_magic():
    return b"\x08\x03" + idx_bytes(GOOD_IMAGES)[2:]


def _corrupt_gzip():
    blob = bytearray(gzip.compress(idx_bytes(GOOD_IMAGES)))
    blob[-8] ^= 0xFF  # break the CRC32 in the trailer
    return bytes(blob)


MALFORMED = {
    # name: (file content, substrings the message must contain)
    "bad-magic": (_bad_magic(), ["bad IDX magic number 0x08030803", "two zero bytes"]),
    "float-dtype": (
        idx_bytes(GOOD_IMAGES, type_code=0x0D),
        ["data type code 0x0d", "float32", "expected 0x08"],
    ),
    "unknown-dtype": (idx_bytes(GOOD_IMAGES, type_code=0x42), ["data type code 0x42", "expected 0x08"]),
    "zero-ndim": (b"\x00\x00\x08\x00", ["0 dimensions"]),
    "too-short": (b"\x00\x00", ["too short", "2 bytes"]),
    "truncated-header": (
        b"\x00\x00\x08\x03" + struct.pack(">I", 2),
        ["truncated IDX header", "16 header bytes", "has 8"],
    ),
    "truncated-payload": (
        idx_bytes(GOOD_IMAGES)[:-5],
        ["truncated IDX payload", "(2, 3, 4)", "needs 24 bytes", "only 19"],
    ),
    "trailing-bytes": (
        idx_bytes(GOOD_IMAGES) + b"\x01\x02\x03",
        ["3 unexpected trailing bytes", "needs 24 bytes", "found 27"],
    ),
    "corrupt-gzip": (_corrupt_gzip(), ["corrupt gzip"]),
    "truncated-gzip": (gzip.compress(idx_bytes(GOOD_IMAGES))[:-12], ["corrupt gzip"]),
    "gzip-magic-garbage": (b"\x1f\x8bnot really gzip", ["corrupt gzip"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_read_idx_rejects_malformed_files(tmp_path, case):
    content, fragments = MALFORMED[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte"
    with pytest.raises(DatasetError, match="file not found") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


# --------------------------------------------------------------------------
# folder datasets
# --------------------------------------------------------------------------


def test_raw_folder_dataset_loads_exact_values(tmp_path):
    folder = tmp_path / "tiny"
    arrays = make_folder_dataset(folder, n_train=5, n_test=3, gz=False)
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
    arrays = make_folder_dataset(folder, n_train=4, n_test=2, hw=(7, 9), gz=True)
    ds = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (4, 1, 7, 9)
    assert ds.test_images.shape == (2, 1, 7, 9)
    assert ds.train_labels.tolist() == arrays["train_labels"].tolist()


def test_folder_with_dotted_file_names(tmp_path):
    folder = tmp_path / "dotted"
    make_folder_dataset(folder)
    for base in BASENAMES.values():
        (folder / base).rename(folder / base.replace("-idx", ".idx", 1))
    ds = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert len(ds.train_labels) == 5


def test_labels_outside_0_to_9_do_not_crash(tmp_path):
    folder = tmp_path / "odd-labels"
    make_folder_dataset(folder)
    write_idx(folder / BASENAMES["train_labels"], np.array([0, 200, 255, 3, 10], dtype=np.uint8))
    ds = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert ds.train_labels.tolist() == [0, 200, 255, 3, 10]


def test_image_label_count_mismatch_names_both_files(tmp_path):
    folder = tmp_path / "mismatch"
    make_folder_dataset(folder, n_train=5)
    labels = write_idx(folder / BASENAMES["train_labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "count mismatch" in msg
    assert str(folder / BASENAMES["train_images"]) in msg and "5 images" in msg
    assert str(labels) in msg and "4 labels" in msg


def test_labels_with_wrong_ndim(tmp_path):
    folder = tmp_path / "labels3d"
    make_folder_dataset(folder, n_test=3)
    labels = write_idx(folder / BASENAMES["test_labels"], np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(labels) in msg
    assert "(3, 28, 28)" in msg and "expected 1 dimension" in msg


def test_images_with_wrong_ndim(tmp_path):
    folder = tmp_path / "images2d"
    make_folder_dataset(folder, n_train=5)
    images = write_idx(folder / BASENAMES["train_images"], np.zeros((5, 784), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(images) in msg
    assert "(5, 784)" in msg and "expected 3 dimensions" in msg


def test_train_test_image_size_mismatch(tmp_path):
    folder = tmp_path / "sizes"
    make_folder_dataset(folder, n_test=3)
    write_idx(folder / BASENAMES["test_images"], np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DatasetError, match="image size mismatch") as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert "28x28" in str(err.value) and "32x32" in str(err.value)


def test_malformed_file_in_folder_is_named(tmp_path):
    folder = tmp_path / "broken"
    make_folder_dataset(folder)
    bad = folder / BASENAMES["test_images"]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated IDX payload") as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert str(bad) in str(err.value)


def test_folder_missing_a_file(tmp_path):
    folder = tmp_path / "incomplete"
    make_folder_dataset(folder)
    (folder / BASENAMES["test_labels"]).unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(str(folder), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(folder) in msg and "t10k-labels-idx1-ubyte" in msg


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar-10", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "cifar-10" in msg
    assert "'mnist'" in msg and "'fashion-mnist'" in msg and "folder" in msg


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "missing" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "not-installed") in msg
    assert "folder" in msg


def test_fashion_mnist_incomplete_install(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    make_folder_dataset(folder, gz=True)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(folder))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert "train-images-idx3-ubyte" in str(err.value)


def test_fashion_mnist_loads_and_caches(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"  # same layout as Debian's package: four .gz files
    arrays = make_folder_dataset(folder, gz=True)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(folder))
    cache = tmp_path / "cache"
    ds = load_dataset("fashion-mnist", cache_dir=cache)
    assert ds.name == "fashion-mnist"
    assert ds.train_labels.tolist() == arrays["train_labels"].tolist()
    assert (cache / "fashion-mnist-train-images.npy").is_file()
    assert (cache / "fashion-mnist-train-images.json").is_file()
    again = load_dataset("fashion-mnist", cache_dir=cache)
    assert torch.equal(again.train_images, ds.train_images)


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    arrays = make_folder_dataset(folder, gz=True)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(folder))
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")  # mkdir fails even as root
    with pytest.warns(RuntimeWarning, match="cannot write the dataset cache") as record:
        ds = load_dataset("fashion-mnist", cache_dir=not_a_dir / "sub")
    assert len(record) == 1  # one warning, not one per file
    assert ds.test_labels.tolist() == arrays["test_labels"].tolist()


@pytest.mark.skipif(
    not Path(data.FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist(tmp_path):
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train_labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels, minlength=10).tolist() == [1000] * 10


# --------------------------------------------------------------------------
# default cache folder
# --------------------------------------------------------------------------


def test_default_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VAEKIT_CACHE")
    assert data.default_cache_dir() == tmp_path / "xdg" / "vaekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "vaekit"


def test_default_cache_dir_is_used_when_none_given(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    make_folder_dataset(folder, gz=True)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(folder))
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "env-cache"))
    load_dataset("fashion-mnist")
    assert (tmp_path / "env-cache" / "fashion-mnist-test-labels.npy").is_file()


# --------------------------------------------------------------------------
# download_mnist (loopback only)
# --------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Small MNIST-named .gz files served over http://127.0.0.1, with MNIST_MD5 patched to match."""
    root = tmp_path / "www"
    mirror = root / "mnist"
    arrays = make_folder_dataset(mirror, gz=True, seed=3)
    table = {
        f"{base}.gz": hashlib.md5(gzip.decompress((mirror / f"{base}.gz").read_bytes())).hexdigest()
        for base in BASENAMES.values()
    }
    monkeypatch.setattr(data, "MNIST_MD5", table)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_address[1]}/mnist/",
            "mirror": mirror,
            "arrays": arrays,
        }
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_download_mnist_fetches_verifies_and_skips(served, tmp_path):
    dest = tmp_path / "downloaded"
    assert data.download_mnist(dest, served["url"], timeout=5) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(data.MNIST_MD5)
    for name in data.MNIST_MD5:
        assert (dest / name).read_bytes() == (served["mirror"] / name).read_bytes()
    ds = load_dataset(dest, cache_dir=tmp_path / "cache")
    assert ds.train_labels.tolist() == served["arrays"]["train_labels"].tolist()

    # Valid files are not fetched again: the (unreachable) server is never asked.
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert data.download_mnist(dest, _closed_port_url(), timeout=5) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps


def test_download_mnist_replaces_a_corrupt_existing_file(served, tmp_path):
    dest = tmp_path / "downloaded"
    dest.mkdir()
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.download_mnist(str(dest), served["url"].rstrip("/"), timeout=5)  # no trailing slash
    got = (dest / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert got == (served["mirror"] / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_download_mnist_wrong_content_leaves_no_file(served, tmp_path):
    bad = served["mirror"] / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"not the expected content"))
    dest = tmp_path / "downloaded"
    with pytest.raises(DatasetError) as err:
        data.download_mnist(dest, served["url"], timeout=5)
    msg = str(err.value)
    assert served["url"] + "t10k-images-idx3-ubyte.gz" in msg
    assert data.MNIST_MD5["t10k-images-idx3-ubyte.gz"] in msg
    assert hashlib.md5(b"not the expected content").hexdigest() in msg
    # Files before it in order were kept; the bad one and any temp file were not.
    assert sorted(p.name for p in dest.iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]


def test_download_mnist_http_404_names_url(served, tmp_path):
    (served["mirror"] / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="404") as err:
        data.download_mnist(tmp_path / "d", served["url"], timeout=5)
    assert served["url"] + "train-labels-idx1-ubyte.gz" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_download_mnist_unreachable_url(tmp_path):
    url = _closed_port_url()
    dest = tmp_path / "d"
    with pytest.raises(DatasetError) as err:
        data.download_mnist(dest, url, timeout=5)
    assert url + "train-images-idx3-ubyte.gz" in str(err.value)
    assert list(dest.iterdir()) == []


def test_download_mnist_from_file_url(served, tmp_path):
    dest = data.download_mnist(tmp_path / "d", served["mirror"].as_uri() + "/", timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(data.MNIST_MD5)


# --------------------------------------------------------------------------
# uint8 storage, float views, DataConfig options
# --------------------------------------------------------------------------


def test_mnist_uint8_route_gives_the_same_floats_bit_for_bit(real_mnist):
    files = data.mnist_files()
    for split, role in (("train", "train_images"), ("test", "test_images")):
        raw = read_idx(files[role])  # [N, 28, 28] uint8, straight from the shipped file
        u8 = getattr(real_mnist, f"{split}_uint8")
        assert u8.dtype == torch.uint8 and u8.shape == (len(raw), 1, 28, 28)
        assert torch.equal(u8[:, 0], torch.from_numpy(raw))
        # what load_dataset returned before ImageData held bytes
        before = torch.from_numpy(raw).reshape(len(raw), 1, 28, 28).to(torch.float32).div_(255.0)
        after = getattr(real_mnist, f"{split}_images")
        assert after.dtype == torch.float32 and torch.equal(after, before)
        assert after is getattr(real_mnist, f"{split}_images")  # computed once, then kept


def test_cached_mnist_is_memory_mapped_without_warnings(real_mnist, cache_copy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed a read-only array
        again = load_dataset("mnist", cache_dir=cache_copy)
    npy = cache_copy / "mnist-test-images.npy"
    offset = npy.stat().st_size - again.test_uint8.numel()
    with open(npy, "r+b") as fh:  # a change to the file shows through a memory map, not through a copy
        fh.seek(offset)
        fh.write(bytes([99]))
    assert again.test_uint8[0, 0, 0, 0].item() == 99
    assert real_mnist.test_uint8[0, 0, 0, 0].item() == 0
    assert again.info["source"] == "mnist" and again.info["split"] == "given" and again.info["labelled"]


def test_idx_folder_info_and_options(tmp_path):
    arrays = make_folder_dataset(tmp_path / "idx", hw=(6, 8))
    loaded = load_dataset(tmp_path / "idx", config=DataConfig(image_size=4, channels=3))
    assert loaded.train_uint8.shape == (5, 3, 4, 4) and loaded.info["source"] == "idx"
    assert loaded.info["image_size"] == [4, 4] and loaded.info["channels"] == 3 and loaded.info["cache"] is None
    plain = load_dataset(tmp_path / "idx")
    assert torch.equal(plain.train_uint8[:, 0], torch.from_numpy(arrays["train_images"]))


def test_data_config_bounds():
    assert DataConfig() == DataConfig(image_size=None, channels=None, test_fraction=0.1, skip_bad_images=False)
    for bad, needle in [
        ({"channels": 2}, "channels"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"image_size": 0}, "image_size"),
        ({"skip_bad_images": "yes"}, "skip_bad_images"),
    ]:
        with pytest.raises(ValueError, match=needle):
            DataConfig(**bad)


def test_check_min_images(tmp_path):
    make_folder_dataset(tmp_path / "idx")
    loaded = load_dataset(tmp_path / "idx")
    data.check_min_images(loaded, 5)
    with pytest.raises(DatasetError, match="5 training images, fewer than one batch of 6"):
        data.check_min_images(loaded, 6)


def test_export_png_from_vaekit_data_loads_back(real_mnist, tmp_path):
    folder = data.export_png(real_mnist, tmp_path / "png", limit_train=12, limit_test=4)
    assert folder == tmp_path / "png" and (folder / "train" / "5" / "00000.png").is_file()  # MNIST's first digit is a 5
    back = load_dataset(folder, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(back.train_uint8, real_mnist.train_uint8[:12]) and torch.equal(back.test_labels, real_mnist.test_labels[:4])
    assert data.detect_format(folder) == "image-folder"


# binarization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_binarize_is_binary_and_keeps_shape_and_dtype(dtype):
    x = grey_images(3, seed=5).to(dtype)
    y = binarize(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert ((y == 0) | (y == 1)).all()
    assert ((y == 0) & (x == 0)).sum() == (x == 0).sum()  # never lights up a black pixel


def test_binarize_with_a_seed_ignores_and_keeps_the_global_rng():
    x = grey_images(4, seed=6)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = binarize(x, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator
    torch.manual_seed(123)
    torch.rand(1000)
    b = binarize(x, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(binarize(x), binarize(x, seed=BINARIZE_SEED))
    assert not torch.equal(a, binarize(x, seed=8))


def test_binarize_without_a_seed_uses_the_global_rng():
    x = grey_images(4, seed=6)
    torch.manual_seed(3)
    a = binarize(x, seed=None)
    torch.manual_seed(3)
    b = binarize(x, seed=None)
    c = binarize(x, seed=None)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_binarize_frequency_of_ones_is_the_grey_level():
    levels = [0.0, 0.02, 0.25, 0.5, 0.8, 1.0]
    n = 40_000
    x = torch.tensor(levels).repeat_interleave(n).reshape(len(levels), 1, 200, 200)
    y = binarize(x, seed=9)
    for i, p in enumerate(levels):
        ones = y[i].sum().item()
        sd = math.sqrt(n * p * (1 - p))  # binomial standard deviation of the count
        assert abs(ones - n * p) <= 5 * sd, (p, ones)


def test_binarize_rejects_integer_images():
    with pytest.raises(ValueError, match="images"):
        binarize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
