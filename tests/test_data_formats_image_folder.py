"""Tests for vaekit.data.formats.image_folder: folders of image files, their splits, labels, order and errors.

Every image here is written by the test, with Pillow, mostly from the shipped MNIST; every
test imports into its own cache folder (``cache``), never the user's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import DatasetError, decode_image
from vaekit.data.parallel import PARALLEL_MIN

from helpers import digits, load_images, write_flat


def sample_image_folder(folder: Path, monkeypatch) -> Path:
    """A tiny folder of PNGs in class folders (6 train, 2 test), for the contract test of every format."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            (folder / split / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8), "L").save(folder / split / f"class{i % 2}" / f"{i:05d}.png")
    return folder


SAMPLES = {"image-folder": sample_image_folder}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_mnist_exported_as_png_class_folders_loads_back_identical(mnist, tmp_path, cache):
    """train/<label>/<index>.png and test/<label>/<index>.png load in IDX order with MNIST's bytes and labels."""
    n_train, n_test = 300, 100  # more than _PARALLEL_MIN files: the process pool decodes them
    root = tmp_path / "mnist-png"
    for split, n in (("train", n_train), ("test", n_test)):
        images = digits(mnist, n, split)
        labels = getattr(mnist, f"{split}_labels")[:n].tolist()
        for i, (img, label) in enumerate(zip(images, labels)):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "L").save(root / split / str(label) / f"{i:05d}.png")
    assert n_train + n_test >= PARALLEL_MIN

    data = load_images(root, cache)

    assert data.train_uint8.dtype == torch.uint8 and data.train_uint8.shape == (n_train, 1, 28, 28)
    assert torch.equal(data.train_uint8, mnist.train_uint8[:n_train])
    assert torch.equal(data.train_labels, mnist.train_labels[:n_train])
    assert torch.equal(data.test_uint8, mnist.test_uint8[:n_test])
    assert torch.equal(data.test_labels, mnist.test_labels[:n_test])
    assert torch.equal(data.train_images, mnist.train_images[:n_train])  # the floats too, bit for bit
    assert data.info.classes == [str(d) for d in range(10)]
    assert data.info.split.startswith("given") and data.info.labelled is True
    assert data.info.image_size == [28, 28] and data.info.channels == 1


def test_rgb_png_of_grey_digits_defaults_to_3_channels_and_converts_to_1(mnist, tmp_path, cache):
    grey = digits(mnist, 20)
    write_flat(tmp_path / "rgb", [np.stack([g, g, g], -1) for g in grey], mode="RGB")
    three = load_images(tmp_path / "rgb", cache)
    assert three.info.channels == 3 and three.train_uint8.shape[1] == 3
    one = load_images(tmp_path / "rgb", cache, channels=1)
    everything = torch.cat([one.train_uint8, one.test_uint8])
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, grey[:, None]))  # luma of R=G=B is exact
    assert torch.equal(three.train_uint8[:, :1].expand(-1, 3, -1, -1), three.train_uint8)


def test_mixed_sizes_are_refused_with_the_sizes_listed_then_resized_and_cropped(mnist, tmp_path, cache):
    folder = tmp_path / "mixed"
    write_flat(folder, digits(mnist, 10))
    wide = np.zeros((30, 60), np.uint8)
    wide[:, 15:45] = np.arange(30, dtype=np.uint8)[None, :] * 8  # the centre 30 columns
    Image.fromarray(wide, "L").save(folder / "wide.png")
    with pytest.raises(DatasetError) as err:
        load_images(folder, cache)
    msg = str(err.value)
    assert "28x28 (10 files" in msg and "60x30 (1 file, e.g. wide.png)" in msg and "--image-size" in msg

    assert np.array_equal(decode_image(folder / "wide.png", image_size=30), wide[None, :, 15:45])  # no resampling
    data = load_images(folder, cache, image_size=14)
    assert data.train_uint8.shape[1:] == (1, 14, 14) and len(data.train_uint8) + len(data.test_uint8) == 11
    half = decode_image(folder / "00000.png", image_size=14)
    expected = np.asarray(Image.fromarray(digits(mnist, 1)[0], "L").resize((14, 14), Image.Resampling.BICUBIC))
    assert np.array_equal(half[0], expected)


def test_grey_and_colour_mixed_default_to_3_channels(mnist, tmp_path, cache):
    grey = digits(mnist, 10)
    write_flat(tmp_path / "mix", grey)
    Image.fromarray(np.stack([grey[0]] * 3, -1), "RGB").save(tmp_path / "mix" / "99999.png")
    data = load_images(tmp_path / "mix", cache)
    assert data.info.channels == 3
    both = torch.cat([data.train_uint8, data.test_uint8])
    assert torch.equal(both[:, 0], both[:, 2])  # grey repeated into R, G, B


# ----------------------------------------------------------------------------- splits and labels


def test_class_folders_without_train_test_are_split_by_seed(mnist, tmp_path, cache):
    images, labels = digits(mnist, 60), mnist.train_labels[:60].tolist()
    for i, (img, label) in enumerate(zip(images, labels)):
        (tmp_path / "cls" / f"digit{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(tmp_path / "cls" / f"digit{label}" / f"{i:05d}.png")
    data = load_images(tmp_path / "cls", cache, test_fraction=0.2)
    assert (len(data.train_uint8), len(data.test_uint8)) == (48, 12)
    assert data.info.split == "seeded" and data.info.test_fraction == 0.2 and data.info.split_seed == 0
    assert data.info.classes == [f"digit{d}" for d in sorted(set(labels))]
    # every image keeps its own label, and the union of the splits is the whole set
    pairs = {bytes(x.numpy()): int(y) for x, y in zip(torch.cat([data.train_uint8, data.test_uint8]), torch.cat([data.train_labels, data.test_labels]))}
    names = data.info.classes
    assert pairs == {bytes(img[None]): names.index(f"digit{label}") for img, label in zip(images, labels)}
    again = load_images(tmp_path / "cls", tmp_path / "other-cache", test_fraction=0.2)
    assert torch.equal(again.test_uint8, data.test_uint8)  # the seeded split is the same every time


def test_flat_folder_has_no_labels(mnist, tmp_path, cache):
    write_flat(tmp_path / "flat", digits(mnist, 5))  # image files of its own: no class folders
    write_flat(tmp_path / "flat" / "nested", digits(mnist, 10)[5:])  # searched recursively
    data = load_images(tmp_path / "flat", cache)
    assert data.info.labelled is False and data.info.classes is None
    assert data.train_labels.eq(-1).all() and data.test_labels.eq(-1).all() and len(data.test_labels) == 1


def test_hidden_and_non_image_files_are_ignored(mnist, tmp_path, cache):
    write_flat(tmp_path / "f", digits(mnist, 10))
    (tmp_path / "f" / "README.txt").write_text("not an image")
    (tmp_path / "f" / ".hidden.png").write_text("not an image either")
    assert len(load_images(tmp_path / "f", cache).train_uint8) == 9


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_image_is_named_then_skipped_with_the_flag(mnist, tmp_path, cache, kind):
    folder = tmp_path / "bad"
    paths = write_flat(folder, digits(mnist, 10))
    if kind == "truncated":
        paths[3].write_bytes(paths[3].read_bytes()[:60])
    else:
        paths[3].write_text("this is a text file, not a PNG")
    with pytest.raises(DatasetError) as err:
        load_images(folder, cache)
    msg = str(err.value)
    assert str(paths[3]) in msg and "--skip-bad-images" in msg and "\n" not in msg
    data = load_images(folder, cache, skip_bad_images=True)
    assert len(data.train_uint8) + len(data.test_uint8) == 9
    assert data.info.skipped == 1 and data.info.skipped_files[0].startswith("00003.png: ")


def test_empty_folder_and_folder_without_images(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is empty"):
        load_images(tmp_path / "empty", cache)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="holds no image files"):
        load_images(tmp_path / "docs", cache)


def test_empty_test_split_is_refused(mnist, tmp_path, cache):
    write_flat(tmp_path / "few", digits(mnist, 4))
    with pytest.raises(DatasetError, match="test split empty.*--test-fraction"):
        load_images(tmp_path / "few", cache)  # round(0.1 * 4) = 0
    write_flat(tmp_path / "given" / "train", digits(mnist, 4))
    (tmp_path / "given" / "test").mkdir()
    with pytest.raises(DatasetError, match="test split would be empty"):
        load_images(tmp_path / "given", cache)


def test_train_without_test_folder_is_refused(mnist, tmp_path, cache):
    write_flat(tmp_path / "half" / "train", digits(mnist, 4))
    with pytest.raises(DatasetError, match="has train/ but no test/"):
        load_images(tmp_path / "half", cache)


def test_symlink_loop_is_reported(mnist, tmp_path, cache):
    write_flat(tmp_path / "loop" / "a", digits(mnist, 10))
    os.symlink(tmp_path / "loop", tmp_path / "loop" / "a" / "back")
    with pytest.raises(DatasetError, match="symbolic link loop"):
        load_images(tmp_path / "loop", cache)


def test_symlinked_folder_is_followed(mnist, tmp_path, cache):
    write_flat(tmp_path / "elsewhere", digits(mnist, 10))
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked" / "images")
    assert len(load_images(tmp_path / "linked", cache).train_uint8) == 9


def test_all_test_images_bad_is_an_empty_split_even_when_skipping(mnist, tmp_path, cache):
    write_flat(tmp_path / "d" / "train", digits(mnist, 5))
    (tmp_path / "d" / "test").mkdir()
    (tmp_path / "d" / "test" / "x.png").write_text("nope")
    with pytest.raises(DatasetError, match="test split would be empty"):
        load_images(tmp_path / "d", cache, skip_bad_images=True)


def test_class_names_that_are_numbers_are_the_labels(mnist, tmp_path, cache):
    # a subset without 6 and 8: labels must stay the digits, not positions among the names
    for split in ("train", "test"):
        for i, digit in enumerate([7, 9, 0, 10]):
            (tmp_path / "n" / split / str(digit)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits(mnist, 4)[i], "L").save(tmp_path / "n" / split / str(digit) / f"{i:05d}.png")
    data = load_images(tmp_path / "n", cache)
    assert data.train_labels.tolist() == [7, 9, 0, 10]
    assert data.info.classes == ["0", "7", "9", "10"] and data.info.class_labels == {"0": 0, "7": 7, "9": 9, "10": 10}
    (tmp_path / "n" / "train" / "cat").mkdir()  # one name that is not a number: ImageFolder's positions
    Image.fromarray(digits(mnist, 5)[4], "L").save(tmp_path / "n" / "train" / "cat" / "00004.png")
    mixed = load_images(tmp_path / "n", cache)
    assert mixed.info.classes == ["0", "10", "7", "9", "cat"] and mixed.train_labels.tolist() == [2, 3, 0, 1, 4]
