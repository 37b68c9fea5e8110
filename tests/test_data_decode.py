"""Tests for vaekit.data.decode: one image file to uint8 [C, H, W], and the conversion rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import DatasetError, conform_uint8, decode_image

from helpers import digits, load_images, write_flat


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_jpeg_grey_and_colour(mnist, tmp_path, cache):
    grey = digits(mnist, 12)
    write_flat(tmp_path / "jpg", grey, suffix=".jpg", quality=95)
    data = load_images(tmp_path / "jpg", cache, test_fraction=0.25)
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


def test_conform_uint8_matches_pillow(mnist):
    rgb = np.random.default_rng(1).integers(0, 256, (2, 3, 5, 6), dtype=np.uint8)
    luma = conform_uint8(rgb, channels=1)
    pil = np.asarray(Image.fromarray(rgb[0].transpose(1, 2, 0), "RGB").convert("L"))
    assert luma.shape == (2, 1, 5, 6) and np.array_equal(luma[0, 0], pil)
    t = conform_uint8(mnist.test_uint8[:3], image_size=32, channels=3)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 3, 32, 32)


def test_truncated_png_that_opens_fails_on_decode(mnist, tmp_path):
    write_flat(tmp_path, digits(mnist, 1))
    path = tmp_path / "00000.png"
    path.write_bytes(path.read_bytes()[:-30])  # header intact, data cut
    with pytest.raises(DatasetError, match="00000.png"):
        decode_image(path)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = np.zeros((4, 8), np.uint8)
    img[:, :4] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img, "L").save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = decode_image(tmp_path / "rot.jpg")
    assert out.shape == (1, 8, 4)  # width and height swapped
    assert out[0, :4].mean() > 200 and out[0, 4:].mean() < 50  # the white half is now on top
