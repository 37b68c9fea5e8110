"""Tests for vaekit.data.images: ImageData (bytes, float views, labels, info), binarize, check_min_images."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vaekit.data import BINARIZE_SEED, DatasetError, DatasetInfo, ImageData, binarize, check_min_images, load_dataset

from helpers import DTYPES, grey_images, make_idx_folder


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


def test_image_data_info_is_a_dataset_info_and_a_dict_is_converted():
    u8 = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    plain = ImageData("p", train_uint8=u8, test_uint8=u8)
    assert plain.info == DatasetInfo() and plain.info.labelled and plain.info.cache is None
    given = ImageData("g", train_uint8=u8, test_uint8=u8, info={"source": "mine", "labelled": False, "note": 1})
    assert isinstance(given.info, DatasetInfo) and given.info.source == "mine" and given.info.labelled is False
    assert given.info.extra == {"note": 1}
    with pytest.raises(DatasetError, match="info must be a DatasetInfo or a dict, got list"):
        ImageData("bad", train_uint8=u8, test_uint8=u8, info=[1, 2])


def test_check_min_images(tmp_path):
    make_idx_folder(tmp_path / "idx")
    loaded = load_dataset(tmp_path / "idx")
    check_min_images(loaded, 5)
    with pytest.raises(DatasetError, match="5 training images, fewer than one batch of 6"):
        check_min_images(loaded, 6)


# ----------------------------------------------------------------------------- binarization


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
