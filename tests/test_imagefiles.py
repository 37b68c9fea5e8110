"""Tests for vaekit.imagefiles: image folders and array files, their conversions, the import cache.

Every image here is written by the test, with Pillow, mostly from the shipped MNIST; every
test imports into its own cache folder (``cache``), never the user's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit.imagefiles as imagefiles
from vaekit.config import DataConfig
from vaekit.data import DATASET_FORMATS, DatasetError, ImageData, detect_format, load_dataset
from vaekit.imagefiles import conform_uint8, decode_image, export_png


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def load(path, cache, **options) -> ImageData:
    return load_dataset(path, cache_dir=cache, config=DataConfig(**options), progress=False)


def digits(mnist, n: int, split: str = "train") -> np.ndarray:
    """The first n MNIST images of a split as [n, 28, 28] uint8."""
    return getattr(mnist, f"{split}_uint8")[:n, 0].numpy()


def write_flat(folder: Path, images, suffix: str = ".png", mode: str = "L", **save) -> list[Path]:
    """Write images (arrays [H, W] or [H, W, C]) as 00000.png, 00001.png, ... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:05d}{suffix}"
        Image.fromarray(np.asarray(img), mode if np.asarray(img).ndim == 2 or mode != "L" else None).save(path, **save)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: (kind, size, mtime_ns, bytes of files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


# ----------------------------------------------------------------------------- the key test


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
    assert n_train + n_test >= imagefiles._PARALLEL_MIN

    data = load(root, cache)

    assert data.train_uint8.dtype == torch.uint8 and data.train_uint8.shape == (n_train, 1, 28, 28)
    assert torch.equal(data.train_uint8, mnist.train_uint8[:n_train])
    assert torch.equal(data.train_labels, mnist.train_labels[:n_train])
    assert torch.equal(data.test_uint8, mnist.test_uint8[:n_test])
    assert torch.equal(data.test_labels, mnist.test_labels[:n_test])
    assert torch.equal(data.train_images, mnist.train_images[:n_train])  # the floats too, bit for bit
    assert data.info["classes"] == [str(d) for d in range(10)]
    assert data.info["split"].startswith("given") and data.info["labelled"] is True
    assert data.info["image_size"] == [28, 28] and data.info["channels"] == 1


def test_export_png_round_trips_grey_and_rgb(mnist, tmp_path, cache):
    export_png(mnist, tmp_path / "grey", limit_train=40, limit_test=12)
    back = load(tmp_path / "grey", cache)
    assert torch.equal(back.train_uint8, mnist.train_uint8[:40]) and torch.equal(back.test_labels, mnist.test_labels[:12])

    rng = np.random.default_rng(0)
    rgb = ImageData(
        "rgb",
        train_uint8=torch.from_numpy(rng.integers(0, 256, (20, 3, 9, 7), dtype=np.uint8)),
        test_uint8=torch.from_numpy(rng.integers(0, 256, (5, 3, 9, 7), dtype=np.uint8)),
    )  # unlabelled: files go straight into train/ and test/
    export_png(rgb, tmp_path / "rgb")
    assert sorted(p.name for p in (tmp_path / "rgb" / "test").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    back = load(tmp_path / "rgb", cache)
    assert torch.equal(back.train_uint8, rgb.train_uint8) and torch.equal(back.test_uint8, rgb.test_uint8)
    assert back.info["labelled"] is False and back.train_labels.eq(-1).all()


# ----------------------------------------------------------------------------- formats and conversions


def test_rgb_png_of_grey_digits_defaults_to_3_channels_and_converts_to_1(mnist, tmp_path, cache):
    grey = digits(mnist, 20)
    write_flat(tmp_path / "rgb", [np.stack([g, g, g], -1) for g in grey], mode="RGB")
    three = load(tmp_path / "rgb", cache)
    assert three.info["channels"] == 3 and three.train_uint8.shape[1] == 3
    one = load(tmp_path / "rgb", cache, channels=1)
    everything = torch.cat([one.train_uint8, one.test_uint8])
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, grey[:, None]))  # luma of R=G=B is exact
    assert torch.equal(three.train_uint8[:, :1].expand(-1, 3, -1, -1), three.train_uint8)


def test_jpeg_grey_and_colour(mnist, tmp_path, cache):
    grey = digits(mnist, 12)
    write_flat(tmp_path / "jpg", grey, suffix=".jpg", quality=95)
    data = load(tmp_path / "jpg", cache, test_fraction=0.25)
    assert data.train_uint8.shape == (9, 1, 28, 28) and data.test_uint8.shape == (3, 1, 28, 28)
    decoded = torch.from_numpy(decode_image(tmp_path / "jpg" / "00000.jpg"))
    assert decoded.shape == (1, 28, 28)
    assert (decoded.float() - torch.from_numpy(grey[0]).float()).abs().mean() < 8  # lossy, but the digit

    colour = np.zeros((16, 16, 3), dtype=np.uint8)
    colour[..., 0] = 200  # red
    Image.fromarray(colour, "RGB").save(tmp_path / "red.jpg", quality=95)
    arr = decode_image(tmp_path / "red.jpg")
    assert arr.shape == (3, 16, 16) and abs(int(arr[0].mean()) - 200) < 6 and arr[1].mean() < 10


@pytest.mark.parametrize("suffix,save", [(".bmp", {}), (".webp", {"lossless": True}), (".tiff", {}), (".gif", {}), (".pgm", {})])
def test_other_pillow_formats_are_lossless_for_grey(mnist, tmp_path, suffix, save):
    img = digits(mnist, 1)[0]
    Image.fromarray(img, "L").save(tmp_path / f"a{suffix}", **save)
    # WebP has no grey mode (it decodes to RGB): --channels 1 gives the grey back exactly
    assert np.array_equal(decode_image(tmp_path / f"a{suffix}", channels=1), img[None])


def test_gif_gives_its_first_frame(tmp_path):
    first, second = np.full((8, 8), 30, np.uint8), np.full((8, 8), 220, np.uint8)
    Image.fromarray(first, "L").save(tmp_path / "anim.gif", save_all=True, append_images=[Image.fromarray(second, "L")])
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert np.array_equal(decode_image(tmp_path / "anim.gif"), first[None])


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    rgba[0, 0] = (255, 255, 255, 0)  # fully transparent white -> black
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = decode_image(tmp_path / "rgba.png")
    assert out.shape == (3, 4, 4)
    assert out[:, 1, 1].tolist() == [round(200 * 128 / 255), round(100 * 128 / 255), round(50 * 128 / 255)]
    assert out[:, 0, 0].tolist() == [0, 0, 0] and out[:, 0, 1].tolist() == [10, 20, 30]

    la = np.zeros((2, 2, 2), np.uint8)
    la[...] = (255, 64)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png").tolist() == [[[64, 64], [64, 64]]]


def test_palette_images_become_rgb_or_grey(tmp_path):
    colour = Image.new("P", (3, 2))
    colour.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    colour.putdata([0, 1, 2, 2, 1, 0])
    colour.save(tmp_path / "colour.png")
    out = decode_image(tmp_path / "colour.png")
    assert out.shape == (3, 2, 3) and out[:, 0, 1].tolist() == [255, 0, 0] and out[:, 0, 2].tolist() == [0, 0, 255]

    grey = Image.new("P", (2, 1))
    grey.putpalette([v for g in range(256) for v in (g, g, g)])
    grey.putdata([17, 250])
    grey.save(tmp_path / "grey.png")
    assert decode_image(tmp_path / "grey.png").tolist() == [[[17, 250]]]

    transparent = Image.new("P", (2, 1))
    transparent.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    transparent.putdata([0, 1])
    transparent.save(tmp_path / "transparent.png", transparency=0)  # colour 0 is see-through
    assert decode_image(tmp_path / "transparent.png")[:, 0].T.tolist() == [[0, 0, 0], [0, 255, 0]]


def test_16_bit_grey_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # 16-bit grey PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert decode_image(tmp_path / "deep.png").tolist() == [[[0, 1, 128, 255]]]


def test_mixed_sizes_are_refused_with_the_sizes_listed_then_resized_and_cropped(mnist, tmp_path, cache):
    folder = tmp_path / "mixed"
    write_flat(folder, digits(mnist, 10))
    wide = np.zeros((30, 60), np.uint8)
    wide[:, 15:45] = np.arange(30, dtype=np.uint8)[None, :] * 8  # the centre 30 columns
    Image.fromarray(wide, "L").save(folder / "wide.png")
    with pytest.raises(DatasetError) as err:
        load(folder, cache)
    msg = str(err.value)
    assert "28x28 (10 files" in msg and "60x30 (1 file, e.g. wide.png)" in msg and "--image-size" in msg

    assert np.array_equal(decode_image(folder / "wide.png", image_size=30), wide[None, :, 15:45])  # no resampling
    data = load(folder, cache, image_size=14)
    assert data.train_uint8.shape[1:] == (1, 14, 14) and len(data.train_uint8) + len(data.test_uint8) == 11
    half = decode_image(folder / "00000.png", image_size=14)
    expected = np.asarray(Image.fromarray(digits(mnist, 1)[0], "L").resize((14, 14), Image.Resampling.BICUBIC))
    assert np.array_equal(half[0], expected)


def test_grey_and_colour_mixed_default_to_3_channels(mnist, tmp_path, cache):
    grey = digits(mnist, 10)
    write_flat(tmp_path / "mix", grey)
    Image.fromarray(np.stack([grey[0]] * 3, -1), "RGB").save(tmp_path / "mix" / "99999.png")
    data = load(tmp_path / "mix", cache)
    assert data.info["channels"] == 3
    both = torch.cat([data.train_uint8, data.test_uint8])
    assert torch.equal(both[:, 0], both[:, 2])  # grey repeated into R, G, B


def test_conform_uint8_matches_pillow(mnist):
    rgb = np.random.default_rng(1).integers(0, 256, (2, 3, 5, 6), dtype=np.uint8)
    luma = conform_uint8(rgb, channels=1)
    pil = np.asarray(Image.fromarray(rgb[0].transpose(1, 2, 0), "RGB").convert("L"))
    assert luma.shape == (2, 1, 5, 6) and np.array_equal(luma[0, 0], pil)
    t = conform_uint8(mnist.test_uint8[:3], image_size=32, channels=3)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 3, 32, 32)


# ----------------------------------------------------------------------------- splits and labels


def test_class_folders_without_train_test_are_split_by_seed(mnist, tmp_path, cache):
    images, labels = digits(mnist, 60), mnist.train_labels[:60].tolist()
    for i, (img, label) in enumerate(zip(images, labels)):
        (tmp_path / "cls" / f"digit{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(tmp_path / "cls" / f"digit{label}" / f"{i:05d}.png")
    data = load(tmp_path / "cls", cache, test_fraction=0.2)
    assert (len(data.train_uint8), len(data.test_uint8)) == (48, 12)
    assert data.info["split"] == "seeded" and data.info["test_fraction"] == 0.2 and data.info["split_seed"] == 0
    assert data.info["classes"] == [f"digit{d}" for d in sorted(set(labels))]
    # every image keeps its own label, and the union of the splits is the whole set
    pairs = {bytes(x.numpy()): int(y) for x, y in zip(torch.cat([data.train_uint8, data.test_uint8]), torch.cat([data.train_labels, data.test_labels]))}
    names = data.info["classes"]
    assert pairs == {bytes(img[None]): names.index(f"digit{label}") for img, label in zip(images, labels)}
    again = load(tmp_path / "cls", tmp_path / "other-cache", test_fraction=0.2)
    assert torch.equal(again.test_uint8, data.test_uint8)  # the seeded split is the same every time


def test_flat_folder_has_no_labels(mnist, tmp_path, cache):
    write_flat(tmp_path / "flat", digits(mnist, 5))  # image files of its own: no class folders
    write_flat(tmp_path / "flat" / "nested", digits(mnist, 10)[5:])  # searched recursively
    data = load(tmp_path / "flat", cache)
    assert data.info["labelled"] is False and data.info["classes"] is None
    assert data.train_labels.eq(-1).all() and data.test_labels.eq(-1).all() and len(data.test_labels) == 1


def test_hidden_and_non_image_files_are_ignored(mnist, tmp_path, cache):
    write_flat(tmp_path / "f", digits(mnist, 10))
    (tmp_path / "f" / "README.txt").write_text("not an image")
    (tmp_path / "f" / ".hidden.png").write_text("not an image either")
    assert len(load(tmp_path / "f", cache).train_uint8) == 9


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
        load(folder, cache)
    msg = str(err.value)
    assert str(paths[3]) in msg and "--skip-bad-images" in msg and "\n" not in msg
    data = load(folder, cache, skip_bad_images=True)
    assert len(data.train_uint8) + len(data.test_uint8) == 9
    assert data.info["skipped"] == 1 and data.info["skipped_files"][0].startswith("00003.png: ")


def test_truncated_png_that_opens_fails_on_decode(mnist, tmp_path):
    write_flat(tmp_path, digits(mnist, 1))
    path = tmp_path / "00000.png"
    path.write_bytes(path.read_bytes()[:-30])  # header intact, data cut
    with pytest.raises(DatasetError, match="00000.png"):
        decode_image(path)


def test_empty_folder_and_folder_without_images(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is empty"):
        load(tmp_path / "empty", cache)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="holds no image files"):
        load(tmp_path / "docs", cache)


def test_empty_test_split_is_refused(mnist, tmp_path, cache):
    write_flat(tmp_path / "few", digits(mnist, 4))
    with pytest.raises(DatasetError, match="test split empty.*--test-fraction"):
        load(tmp_path / "few", cache)  # round(0.1 * 4) = 0
    write_flat(tmp_path / "given" / "train", digits(mnist, 4))
    (tmp_path / "given" / "test").mkdir()
    with pytest.raises(DatasetError, match="test split would be empty"):
        load(tmp_path / "given", cache)


def test_train_without_test_folder_is_refused(mnist, tmp_path, cache):
    write_flat(tmp_path / "half" / "train", digits(mnist, 4))
    with pytest.raises(DatasetError, match="has train/ but no test/"):
        load(tmp_path / "half", cache)


def test_symlink_loop_is_reported(mnist, tmp_path, cache):
    write_flat(tmp_path / "loop" / "a", digits(mnist, 10))
    os.symlink(tmp_path / "loop", tmp_path / "loop" / "a" / "back")
    with pytest.raises(DatasetError, match="symbolic link loop"):
        load(tmp_path / "loop", cache)


def test_symlinked_folder_is_followed(mnist, tmp_path, cache):
    write_flat(tmp_path / "elsewhere", digits(mnist, 10))
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked" / "images")
    assert len(load(tmp_path / "linked", cache).train_uint8) == 9


# ----------------------------------------------------------------------------- the cache


def test_second_load_reuses_the_cache_without_decoding(mnist, tmp_path, cache, monkeypatch):
    folder = tmp_path / "imgs"
    paths = write_flat(folder, digits(mnist, 20))
    first = load(folder, cache)
    assert first.info["cache_status"] == "imported"
    manifest = json.loads((Path(first.info["cache"]) / "manifest.json").read_text())
    assert len(manifest["files"]) == 20 and manifest["files"][0][:2] == ["00000.png", paths[0].stat().st_size]
    assert manifest["options"]["test_fraction"] == 0.1 and len(manifest["content_sha256"]) == 64

    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(imagefiles, "_decode", fail)
        m.setattr(imagefiles, "_probe", fail)
        second = load(folder, cache)
    assert second.info["cache_status"] == "reused"
    assert torch.equal(second.train_uint8, first.train_uint8) and torch.equal(second.test_uint8, first.test_uint8)

    calls = []
    real = imagefiles._decode
    monkeypatch.setattr(imagefiles, "_decode", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    st = paths[5].stat()
    os.utime(paths[5], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: re-import
    third = load(folder, cache)
    assert third.info["cache_status"].startswith("re-imported") and len(calls) == 20
    assert torch.equal(third.train_uint8, first.train_uint8)


def test_changing_an_option_imports_again_and_keeps_the_other(mnist, tmp_path, cache, monkeypatch):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    a = load(tmp_path / "imgs", cache)
    b = load(tmp_path / "imgs", cache, image_size=16)
    assert b.info["cache_status"] == "imported" and b.info["cache"] != a.info["cache"]
    assert b.train_uint8.shape[-1] == 16
    c = load(tmp_path / "imgs", cache, test_fraction=0.5)
    assert len(c.test_uint8) == 10 and c.info["cache_status"] == "imported"
    assert load(tmp_path / "imgs", cache).info["cache_status"] == "reused"


def test_adding_a_file_imports_again(mnist, tmp_path, cache):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    assert len(load(tmp_path / "imgs", cache).train_uint8) == 18
    Image.fromarray(digits(mnist, 21)[20], "L").save(tmp_path / "imgs" / "00020.png")
    again = load(tmp_path / "imgs", cache)
    assert len(again.train_uint8) + len(again.test_uint8) == 21


@pytest.mark.parametrize("damage", ["manifest-garbage", "manifest-missing", "array-truncated", "array-garbage", "labels-missing"])
def test_damaged_cache_is_rebuilt(mnist, tmp_path, cache, damage):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    first = load(tmp_path / "imgs", cache)
    folder = Path(first.info["cache"])
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
    again = load(tmp_path / "imgs", cache)
    assert again.info["cache_status"] != "reused"
    assert torch.equal(again.train_uint8, expected)


def test_the_source_folder_is_never_written(mnist, tmp_path, cache):
    folder = tmp_path / "src"
    for split in ("train", "test"):
        write_flat(folder / split / "a", digits(mnist, 6, split))
        write_flat(folder / split / "b", digits(mnist, 6, split)[::-1])
    bad = folder / "train" / "a" / "00002.png"
    bad.write_bytes(bad.read_bytes()[:50])
    before = snapshot(folder)
    load(folder, cache, skip_bad_images=True)
    load(folder, cache, skip_bad_images=True, image_size=20)  # and again, from the cache
    load(folder, cache, skip_bad_images=True)
    assert snapshot(folder) == before
    assert not (cache / "imports").resolve().is_relative_to(folder.resolve())


def test_cache_arrays_are_memory_mapped_and_load_without_warnings(mnist, tmp_path, cache):
    write_flat(tmp_path / "imgs", digits(mnist, 20))
    load(tmp_path / "imgs", cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        data = load(tmp_path / "imgs", cache)
    path = Path(data.info["cache"]) / "train.npy"
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
        load(tmp_path / "imgs", blocker)


# ----------------------------------------------------------------------------- array files


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
    data = load(tmp_path / "d.npz", cache)
    assert torch.equal(data.train_uint8, mnist.train_uint8[:30]) and torch.equal(data.test_uint8, mnist.test_uint8[:10])
    assert torch.equal(data.test_labels, mnist.test_labels[:10]) and data.info["source"] == "npz"


def test_npz_rgb_floats_train_test_keys(tmp_path, cache):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "c.npz", train=(u8[:9].transpose(0, 2, 3, 1) / 255.0).astype(np.float32),
                        test=(u8[9:].transpose(0, 2, 3, 1) / 255.0))
    data = load(tmp_path / "c.npz", cache)
    assert torch.equal(data.train_uint8, torch.from_numpy(u8[:9])) and torch.equal(data.test_uint8, torch.from_numpy(u8[9:]))
    assert data.info["labelled"] is False and data.info["channels"] == 3
    grey = load(tmp_path / "c.npz", cache, channels=1, image_size=4)
    assert grey.train_uint8.shape == (9, 1, 4, 4)


def test_npz_images_and_npy_are_split_by_seed(mnist, tmp_path, cache):
    u8 = mnist.train_uint8[:50].numpy()
    np.savez(tmp_path / "i.npz", images=u8, labels=mnist.train_labels[:50].numpy())
    np.save(tmp_path / "i.npy", u8)
    a, b = load(tmp_path / "i.npz", cache), load(tmp_path / "i.npy", cache)
    assert (len(a.train_uint8), len(a.test_uint8)) == (45, 5) and a.info["split"] == "seeded"
    assert torch.equal(a.test_uint8, b.test_uint8) and torch.equal(a.train_uint8, b.train_uint8)
    assert a.info["labelled"] and not b.info["labelled"]
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
        load(tmp_path / "bad.npz", cache)
    msg = str(err.value)
    assert str(tmp_path / "bad.npz") in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_not_an_npz_file(tmp_path, cache):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .npz file"):
        load(tmp_path / "x.npz", cache)


# ----------------------------------------------------------------------------- registry


def test_detect_format_and_registry(tmp_path, mnist):
    write_flat(tmp_path / "imgs", digits(mnist, 2))
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"")
    (tmp_path / "a.txt").write_text("?")
    assert detect_format(tmp_path / "imgs") == "image-folder"
    assert detect_format(tmp_path / "a.npy") == "npy" and detect_format(tmp_path / "a.npz") == "npz"
    assert detect_format(tmp_path / "idx") == "idx"
    assert set(DATASET_FORMATS) == {"idx", "image-folder", "npy", "npz"}
    with pytest.raises(DatasetError, match="unknown kind"):
        detect_format(tmp_path / "a.txt")
    with pytest.raises(DatasetError, match="not an existing folder or file"):
        detect_format(tmp_path / "missing")


def test_image_data_floats_are_computed_once_and_replace_keeps_working(mnist):
    small = ImageData("s", train_uint8=mnist.train_uint8[:8], test_uint8=mnist.test_uint8[:4])
    x = small.train_images
    assert x is small.train_images and x.dtype == torch.float32
    assert torch.equal(x, mnist.train_uint8[:8].to(torch.float32).div_(255.0))
    assert small.train_labels.tolist() == [-1] * 8
    same = dataclasses.replace(small, name="t")  # passes the float view back: bytes kept as they are
    assert same.train_uint8 is small.train_uint8
    floats = torch.rand(3, 1, 28, 28)
    new = dataclasses.replace(small, train_images=floats)
    assert new.train_images is floats and torch.equal(new.train_uint8, floats.mul(255).round().to(torch.uint8))
    with pytest.raises(DatasetError, match="uint8"):
        ImageData("bad", train_uint8=torch.zeros(2, 1, 4, 4), test_uint8=torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ----------------------------------------------------------------------------- more edges


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = np.zeros((4, 8), np.uint8)
    img[:, :4] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img, "L").save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = decode_image(tmp_path / "rot.jpg")
    assert out.shape == (1, 8, 4)  # width and height swapped
    assert out[0, :4].mean() > 200 and out[0, 4:].mean() < 50  # the white half is now on top


def test_a_failed_import_leaves_no_partial_cache(mnist, tmp_path, cache):
    paths = write_flat(tmp_path / "imgs", digits(mnist, 20))
    paths[-1].write_text("not a png")  # found last, while a split's array is being written
    with pytest.raises(DatasetError, match="00019.png"):
        load(tmp_path / "imgs", cache)
    leftovers = [p.name for p in (cache / "imports").rglob("*") if p.is_file()]
    assert ".lock" in leftovers  # the import did start
    assert "manifest.json" not in leftovers and not any(n.endswith(".tmp") for n in leftovers)


def test_all_test_images_bad_is_an_empty_split_even_when_skipping(mnist, tmp_path, cache):
    write_flat(tmp_path / "d" / "train", digits(mnist, 5))
    (tmp_path / "d" / "test").mkdir()
    (tmp_path / "d" / "test" / "x.png").write_text("nope")
    with pytest.raises(DatasetError, match="test split would be empty"):
        load(tmp_path / "d", cache, skip_bad_images=True)


def _load_in_child(folder, cache, queue):
    data = load_dataset(folder, cache_dir=cache, progress=False)
    queue.put((data.info["cache_status"], data.train_uint8.numpy().tobytes()))


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
    first = load(tmp_path / "imgs", cache)
    good = paths[7].read_bytes()
    st = paths[7].stat()
    paths[7].write_text("broken for a while")
    with pytest.raises(DatasetError, match="00007.png"):
        load(tmp_path / "imgs", cache)
    assert not (Path(first.info["cache"]) / "manifest.json").exists()
    paths[7].write_bytes(good)
    os.utime(paths[7], ns=(st.st_atime_ns, st.st_mtime_ns))  # back to what the old manifest listed
    again = load(tmp_path / "imgs", cache)
    assert again.info["cache_status"] == "imported"
    assert torch.equal(again.train_uint8, first.train_uint8)


def test_class_names_that_are_numbers_are_the_labels(mnist, tmp_path, cache):
    # a subset without 6 and 8: labels must stay the digits, not positions among the names
    for split in ("train", "test"):
        for i, digit in enumerate([7, 9, 0, 10]):
            (tmp_path / "n" / split / str(digit)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits(mnist, 4)[i], "L").save(tmp_path / "n" / split / str(digit) / f"{i:05d}.png")
    data = load(tmp_path / "n", cache)
    assert data.train_labels.tolist() == [7, 9, 0, 10]
    assert data.info["classes"] == ["0", "7", "9", "10"] and data.info["class_labels"] == {"0": 0, "7": 7, "9": 9, "10": 10}
    (tmp_path / "n" / "train" / "cat").mkdir()  # one name that is not a number: ImageFolder's positions
    Image.fromarray(digits(mnist, 5)[4], "L").save(tmp_path / "n" / "train" / "cat" / "00004.png")
    mixed = load(tmp_path / "n", cache)
    assert mixed.info["classes"] == ["0", "10", "7", "9", "cat"] and mixed.train_labels.tolist() == [2, 3, 0, 1, 4]
