"""Tests for vaekit.data.cache: one cache for every source, checked on every load, memory-mapped.

The named sets (MNIST's verified entry: the session's, copied by ``mnist_cache_copy``; a tiny
Fashion-MNIST) and image folders go through the same entries; every test uses its own cache
folder (``cache``), never the user's.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit.data.decode as decode
import vaekit.data.formats.named as named
import vaekit.data.idx as idx
from vaekit.data import DatasetError, default_cache_dir, load_dataset, mnist_files

from helpers import digits, load_images, make_idx_folder, snapshot, write_flat

ENTRY_FILES = [".lock", "manifest.json", "test-labels.npy", "test.npy", "train-labels.npy", "train.npy"]


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def entry(cache: Path, mnist) -> Path:
    """The MNIST entry in the cache folder ``cache`` (the same name as the session's)."""
    return cache / "imports" / Path(mnist.info.cache).name


def listed(manifest: dict, name: str) -> list:
    """The manifest's [path, size, mtime_ns, md5] of the source file called ``name``."""
    return next(f for f in manifest["files"] if Path(f[0]).name == name)


# ----------------------------------------------------------------------------- the named sets: MNIST's verified entry


def test_first_load_writes_a_verified_entry(mnist):
    folder = Path(mnist.info.cache)
    assert folder.parent == default_cache_dir() / "imports"  # the tests' VAEKIT_CACHE (conftest.py)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "mnist" and manifest["source"] == str(mnist_files()["train_images"].resolve().parent)
    for path in mnist_files().values():
        name, size, mtime_ns, md5 = listed(manifest, path.name)
        assert name == str(path.resolve()) and size == path.stat().st_size and mtime_ns == path.stat().st_mtime_ns
        assert md5 == hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()  # verified against the content
    for split in ("train", "test"):
        images = np.load(folder / f"{split}.npy")
        assert images.dtype == np.uint8 and list(images.shape) == manifest["shapes"][split]
        assert np.array_equal(images[:, 0], idx.read_idx(mnist_files()[f"{split}_images"]))
        assert np.array_equal(np.load(folder / f"{split}-labels.npy"), idx.read_idx(mnist_files()[f"{split}_labels"]))
    assert manifest["info"]["source"] == "mnist" and manifest["info"]["image_size"] == [28, 28]
    for name in ENTRY_FILES[1:]:
        assert (folder / name).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in folder.iterdir()) == ENTRY_FILES  # no temp files left by the atomic writes


def test_cached_load_is_identical_and_reads_no_source_file(mnist, mnist_cache_copy, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a cached load must not read, gunzip or hash the source files")

    monkeypatch.setattr(idx.gzip, "decompress", forbidden)
    monkeypatch.setattr(idx.hashlib, "md5", forbidden)
    monkeypatch.setattr(idx, "read_bytes", forbidden)
    again = load_dataset("mnist", cache_dir=mnist_cache_copy)
    assert again.info.cache_status == "reused" and again.info.import_seconds == 0
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(mnist, field)), field


def test_an_entry_is_trusted_only_while_its_manifest_matches_the_files(mnist, mnist_cache_copy):
    folder = entry(mnist_cache_copy, mnist)
    npy = folder / "test-labels.npy"
    tampered = np.load(npy)
    tampered[:] = 7
    np.save(npy, tampered)
    # The manifest still matches the source files: the cache is read as is (no re-verify).
    assert (load_dataset("mnist", cache_dir=mnist_cache_copy).test_labels == 7).all()

    # A changed source file (its recorded size) forces a re-read and re-verification.
    manifest = json.loads((folder / "manifest.json").read_text())
    listed(manifest, "t10k-labels-idx1-ubyte.gz")[1] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    again = load_dataset("mnist", cache_dir=mnist_cache_copy)
    assert torch.equal(again.test_labels, mnist.test_labels) and again.info.cache_status.startswith("re-imported")
    rewritten = json.loads((folder / "manifest.json").read_text())
    assert listed(rewritten, "t10k-labels-idx1-ubyte.gz")[1] == mnist_files()["test_labels"].stat().st_size
    assert np.array_equal(np.load(npy), mnist.test_labels.numpy())


@pytest.mark.parametrize(
    "damage",
    ["manifest-md5", "manifest-garbage", "manifest-missing", "npy-garbage", "npy-wrong-shape"],
)
def test_damaged_mnist_entries_are_rebuilt(mnist, mnist_cache_copy, damage):
    folder = entry(mnist_cache_copy, mnist)
    npy, manifest_path = folder / "test-labels.npy", folder / "manifest.json"
    if damage == "manifest-md5":
        manifest = json.loads(manifest_path.read_text())
        listed(manifest, "t10k-labels-idx1-ubyte.gz")[3] = "0" * 32
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "manifest-garbage":
        manifest_path.write_text("{not json")
    elif damage == "manifest-missing":
        manifest_path.unlink()
    elif damage == "npy-garbage":
        npy.write_bytes(b"garbage")
    elif damage == "npy-wrong-shape":
        np.save(npy, np.zeros(5, dtype=np.uint8))
    loaded = load_dataset("mnist", cache_dir=mnist_cache_copy)
    assert torch.equal(loaded.test_labels, mnist.test_labels) and loaded.info.cache_status != "reused"
    shipped = mnist_files()["test_labels"]
    expected_md5 = hashlib.md5(gzip.decompress(shipped.read_bytes())).hexdigest()
    assert listed(json.loads(manifest_path.read_text()), shipped.name)[3] == expected_md5
    assert np.array_equal(np.load(npy), mnist.test_labels.numpy())


def test_unwritable_cache_warns_once_and_still_loads(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    arrays = make_idx_folder(folder, gz=True)
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")  # mkdir fails even as root
    with pytest.warns(RuntimeWarning, match="cannot write the dataset cache") as record:
        ds = load_dataset("fashion-mnist", cache_dir=not_a_dir / "sub")
    assert len(record) == 1  # one warning, not one per file
    assert ds.test_labels.tolist() == arrays["test_labels"].tolist() and ds.info.cache is None


def test_an_entry_that_can_be_read_but_not_written_is_used(mnist, mnist_cache_copy):
    folder = entry(mnist_cache_copy, mnist)
    (folder / ".lock").unlink()
    (folder / ".lock").mkdir()  # the lock file cannot be opened, even as root: as if the folder were read-only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_dataset("mnist", cache_dir=mnist_cache_copy)
    assert again.info.cache_status == "reused" and torch.equal(again.test_uint8, mnist.test_uint8)


def test_default_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VAEKIT_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "vaekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vaekit"


def test_default_cache_dir_is_used_when_none_given(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    make_idx_folder(folder, gz=True)
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", str(folder))
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "env-cache"))
    ds = load_dataset("fashion-mnist")
    assert Path(ds.info.cache).parent == tmp_path / "env-cache" / "imports"
    assert (Path(ds.info.cache) / "test-labels.npy").is_file()


# ----------------------------------------------------------------------------- image folders: imported entries


def test_second_load_reuses_the_cache_without_decoding(mnist, tmp_path, cache, monkeypatch):
    folder = tmp_path / "imgs"
    paths = write_flat(folder, digits(mnist, 20))
    first = load_images(folder, cache)
    assert first.info.cache_status == "imported"
    manifest = json.loads((Path(first.info.cache) / "manifest.json").read_text())
    assert len(manifest["files"]) == 20 and manifest["files"][0][:2] == ["00000.png", paths[0].stat().st_size]
    assert manifest["options"]["test_fraction"] == 0.1 and len(manifest["content_sha256"]) == 64

    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(decode, "_decode", fail)
        m.setattr(decode, "_probe", fail)
        second = load_images(folder, cache)
    assert second.info.cache_status == "reused"
    assert torch.equal(second.train_uint8, first.train_uint8) and torch.equal(second.test_uint8, first.test_uint8)

    calls = []
    real = decode._decode
    monkeypatch.setattr(decode, "_decode", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    st = paths[5].stat()
    os.utime(paths[5], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: re-import
    third = load_images(folder, cache)
    assert third.info.cache_status.startswith("re-imported") and len(calls) == 20
    assert torch.equal(third.train_uint8, first.train_uint8)


def test_changing_an_option_imports_again_and_keeps_the_other(mnist, tmp_path, cache, monkeypatch):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    a = load_images(tmp_path / "imgs", cache)
    b = load_images(tmp_path / "imgs", cache, image_size=16)
    assert b.info.cache_status == "imported" and b.info.cache != a.info.cache
    assert b.train_uint8.shape[-1] == 16
    c = load_images(tmp_path / "imgs", cache, test_fraction=0.5)
    assert len(c.test_uint8) == 10 and c.info.cache_status == "imported"
    assert load_images(tmp_path / "imgs", cache).info.cache_status == "reused"


def test_adding_a_file_imports_again(mnist, tmp_path, cache):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    assert len(load_images(tmp_path / "imgs", cache).train_uint8) == 18
    Image.fromarray(digits(mnist, 21)[20], "L").save(tmp_path / "imgs" / "00020.png")
    again = load_images(tmp_path / "imgs", cache)
    assert len(again.train_uint8) + len(again.test_uint8) == 21


@pytest.mark.parametrize("damage", ["manifest-garbage", "manifest-missing", "array-truncated", "array-garbage", "labels-missing"])
def test_damaged_cache_is_rebuilt(mnist, tmp_path, cache, damage):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    first = load_images(tmp_path / "imgs", cache)
    folder = Path(first.info.cache)
    expected = first.train_uint8.clone()
    del first
    if damage == "manifest-garbage":
        (folder / "manifest.json").write_text("{not json")
    elif damage == "manifest-missing":
        (folder / "manifest.json").unlink()
    elif damage == "array-truncated":
        (folder / "train.npy").write_bytes((folder / "train.npy").read_bytes()[:-100])
    elif damage == "array-garbage":
        (folder / "train.npy").write_bytes(b"garbage")
    else:
        (folder / "test-labels.npy").unlink()
    again = load_images(tmp_path / "imgs", cache)
    assert again.info.cache_status != "reused"
    assert torch.equal(again.train_uint8, expected)


def test_the_source_folder_is_never_written(mnist, tmp_path, cache):
    folder = tmp_path / "src"
    for split in ("train", "test"):
        write_flat(folder / split / "a", digits(mnist, 6, split))
        write_flat(folder / split / "b", digits(mnist, 6, split)[::-1])
    bad = folder / "train" / "a" / "00002.png"
    bad.write_bytes(bad.read_bytes()[:50])
    before = snapshot(folder)
    load_images(folder, cache, skip_bad_images=True)
    load_images(folder, cache, skip_bad_images=True, image_size=20)  # and again, from the cache
    load_images(folder, cache, skip_bad_images=True)
    assert snapshot(folder) == before
    assert not (cache / "imports").resolve().is_relative_to(folder.resolve())


def test_cache_arrays_are_memory_mapped_and_load_without_warnings(mnist, tmp_path, cache):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    load_images(tmp_path / "imgs", cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        data = load_images(tmp_path / "imgs", cache)
    path = Path(data.info.cache) / "train.npy"
    offset = len(path.read_bytes()) - data.train_uint8.numel()  # the .npy header
    with open(path, "r+b") as fh:  # change the file in place: a memory map sees it, a copy would not
        fh.seek(offset)
        fh.write(bytes([123]))
    assert data.train_uint8[0, 0, 0, 0].item() == 123
    before = int(np.load(path)[0, 0, 0, 1])
    data.train_uint8[0, 0, 0, 1] = (before + 1) % 256  # copy-on-write: the tensor changes, the file does not
    assert data.train_uint8[0, 0, 0, 1].item() == (before + 1) % 256
    assert int(np.load(path)[0, 0, 0, 1]) == before


def test_unwritable_cache_is_one_clear_error(mnist, tmp_path):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DatasetError, match="VAEKIT_CACHE"):
        load_images(tmp_path / "imgs", blocker)


def test_a_failed_import_leaves_no_partial_cache(mnist, tmp_path, cache):
    paths = write_flat(tmp_path / "imgs", digits(mnist, 20))
    paths[-1].write_text("not a png")  # found last, while a split's array is being written
    with pytest.raises(DatasetError, match="00019.png"):
        load_images(tmp_path / "imgs", cache)
    leftovers = [p.name for p in (cache / "imports").rglob("*") if p.is_file()]
    assert ".lock" in leftovers  # the import did start
    assert "manifest.json" not in leftovers and not any(n.endswith(".tmp") for n in leftovers)


def _load_in_child(folder, cache, queue):
    data = load_dataset(folder, cache_dir=cache, progress=False)
    queue.put((data.info.cache_status, data.train_uint8.numpy().tobytes()))


def test_concurrent_loads_import_once(mnist, tmp_path, cache):
    import multiprocessing

    write_flat(tmp_path / "imgs", digits(mnist, 40))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_load_in_child, args=(tmp_path / "imgs", cache, queue)) for _ in range(2)]
    for c in children:
        c.start()
    results = [queue.get(timeout=120) for _ in children]
    for c in children:
        c.join(timeout=60)
        assert c.exitcode == 0
    statuses = sorted(r[0] for r in results)
    assert statuses == ["imported", "reused"]  # the lock: the second waited, then reused
    assert results[0][1] == results[1][1]


def test_a_failed_re_import_does_not_leave_the_old_manifest(mnist, tmp_path, cache):
    paths = write_flat(tmp_path / "imgs", digits(mnist, 20))
    first = load_images(tmp_path / "imgs", cache)
    good = paths[7].read_bytes()
    st = paths[7].stat()
    paths[7].write_text("broken for a while")
    with pytest.raises(DatasetError, match="00007.png"):
        load_images(tmp_path / "imgs", cache)
    assert not (Path(first.info.cache) / "manifest.json").exists()
    paths[7].write_bytes(good)
    os.utime(paths[7], ns=(st.st_atime_ns, st.st_mtime_ns))  # back to what the old manifest listed
    again = load_images(tmp_path / "imgs", cache)
    assert again.info.cache_status == "imported"
    assert torch.equal(again.train_uint8, first.train_uint8)
