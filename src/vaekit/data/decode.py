"""Decoding one image file to uint8 ``[C, H, W]``, and the conversion rules shared by every source.

Every file Pillow decodes is accepted; a GIF or TIFF gives its first frame. Conversions, in
this order: 16-bit grey is scaled to 8 bits (``round(v * 255 / 65535)``; Pillow itself keeps the
high byte of 16-bit RGB); palette images become RGB (L if the palette is all grey);
transparency (alpha, or a palette's transparent colour) is composited on **black**
(``c * a / 255``); CMYK, YCbCr, LAB, HSV become RGB; a JPEG's EXIF orientation is applied.
Then ``--channels 1`` converts RGB to grey with Pillow's ITU-R 601-2 luma
(``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``), ``--channels 3`` repeats grey into R, G
and B. Then ``--image-size S`` resizes the shorter side to S (Pillow's bicubic filter,
antialiased when shrinking) and crops the centre SxS; an image already SxS is not resampled.
:func:`conform_uint8` applies the same channel and size rules to arrays of bytes.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch

from .errors import DatasetError

__all__ = ["decode_image", "conform_uint8", "decode_chunk", "probe_chunk", "pillow"]

_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class _BadImage(Exception):
    """An image file that cannot be used; the message says why."""


def pillow():
    """Pillow's Image module, imported on first use."""
    try:
        from PIL import Image
    except ImportError as exc:  # a core dependency, but say what to do if it is missing
        raise DatasetError("reading image files needs Pillow: pip install Pillow") from exc
    return Image


def _orientation(img) -> int:
    """A JPEG's EXIF orientation (1-8; 1 when absent); other formats: 1 (reading it could decode the image)."""
    if img.format not in ("JPEG", "MPO"):
        return 1
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block is not worth rejecting the image
        return 1
    return value if 1 <= value <= 8 else 1


def _is_grey(img) -> bool:
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        pal = img.getpalette() or []
        return pal[0::3] == pal[1::3] == pal[2::3]
    return False


def _composite(arr: np.ndarray) -> np.ndarray:
    """[H, W, C+1] uint8 with alpha last -> [H, W, C] composited on black: round(c * a / 255)."""
    colour = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def _to_8bit(img):
    """Any Pillow image -> mode "L" or "RGB" (see the module docstring for the rules)."""
    Image = pillow()
    mode = img.mode
    if mode in ("P", "PA"):
        grey = _is_grey(img)
        alpha = mode == "PA" or "transparency" in img.info
        img = img.convert(("LA" if grey else "RGBA") if alpha else ("L" if grey else "RGB"))
        mode = img.mode
    if mode == "L" or mode == "RGB":
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I"):  # 16-bit grey ("I;16*", or "I" as Pillow opens 16-bit PNGs)
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _BadImage(f"32-bit integer pixels in [{a.min()}, {a.max()}]; expected 16-bit values 0-65535")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise _BadImage(f"floating-point pixels in [{a.min()}, {a.max()}]; expected values in [0, 1]")
        return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), "L")
    if mode in ("LA", "La"):
        return Image.fromarray(_composite(np.asarray(img.convert("LA")))[..., 0], "L")
    if mode in ("RGBA", "RGBa"):
        return Image.fromarray(_composite(np.asarray(img.convert("RGBA"))), "RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _fit(img, size: int | None):
    """Resize the shorter side to ``size`` (bicubic, antialiased) and crop the centre size x size."""
    if size is None or img.size == (size, size):
        return img
    Image = pillow()
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(path: str | os.PathLike, image_size: int | None = None, channels: int | None = None) -> np.ndarray:
    """Decode one image file to a uint8 array ``[C, H, W]``, converted as the module docstring says.

    ``channels`` None keeps the image's own (1 for grey, 3 for colour); ``image_size`` None
    keeps its size.  Raises :class:`DatasetError` naming the file if it cannot be decoded.
    """
    try:
        return _decode(str(path), image_size, channels)
    except _BadImage as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _decode(path: str, image_size: int | None, channels: int | None) -> np.ndarray:
    Image = pillow()
    try:
        with Image.open(path) as img:
            img.load()  # decodes now: a truncated or corrupt file fails here (GIF/TIFF: the first frame)
            orientation = _orientation(img)
            img = _to_8bit(img)
    except _BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds (OSError, SyntaxError, ValueError, zlib.error...)
        raise _BadImage(_why(exc)) from None
    if orientation != 1:
        img = img.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    elif channels == 3 and img.mode == "L":
        img = img.convert("RGB")
    img = _fit(img, image_size)
    arr = np.asarray(img, dtype=np.uint8)  # read-only, shares Pillow's buffer: copied below
    return arr[None].copy() if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"not a readable image ({text})"


def _probe(path: str) -> tuple[int, int, bool]:
    """(width, height, grey) of an image from its header, after EXIF orientation; no full decode."""
    Image = pillow()
    try:
        with Image.open(path) as img:
            w, h = img.size
            if _orientation(img) in (5, 6, 7, 8):
                w, h = h, w
            return w, h, _is_grey(img)
    except Exception as exc:  # noqa: BLE001 - any header Pillow cannot read is a bad image, named with its reason
        raise _BadImage(_why(exc)) from None


def _guarded(fn: Callable, path: str):
    """Run ``fn(path)`` in a worker: the result, or the _BadImage message (as a str) to report."""
    try:
        return fn(path)
    except _BadImage as exc:
        return str(exc)


def decode_chunk(job: tuple[list[str], int | None, int | None]) -> list[tuple[int, np.ndarray | str]]:
    """Decode a chunk of files (in a worker): [(position, [k, C, H, W] run of same-shape images, or an error)].

    Runs of consecutive images are stacked, so that a chunk crosses the process boundary
    as a few arrays rather than one object per image.
    """
    paths, size, channels = job
    items: list[tuple[int, np.ndarray | str]] = []
    run: list[np.ndarray] = []
    start = 0
    for i, path in enumerate(paths):
        try:
            arr = _decode(path, size, channels)
        except _BadImage as exc:
            arr = str(exc)
        if run and (isinstance(arr, str) or arr.shape != run[0].shape):
            items.append((start, np.stack(run)))
            run = []
        if isinstance(arr, str):
            items.append((i, arr))
        else:
            if not run:
                start = i
            run.append(arr)
    if run:
        items.append((start, np.stack(run)))
    return items


def probe_chunk(paths: list[str]) -> list:
    """(width, height, grey) of each file from its header (in a worker), or the message saying why not."""
    return [_guarded(_probe, p) for p in paths]


def conform_uint8(u8, image_size: int | None = None, channels: int | None = None):
    """Convert [N, C, H, W] uint8 images (numpy or torch; the same kind is returned) to ``channels``
    and ``image_size`` exactly as image files are (luma for RGB -> grey; resize and centre crop)."""
    is_torch = isinstance(u8, torch.Tensor)
    arr = u8.numpy() if is_torch else np.asarray(u8)
    original = arr
    if channels == 1 and arr.shape[1] == 3:
        r, g, b = (arr[:, i].astype(np.uint32) for i in range(3))
        arr = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, None]
    elif channels == 3 and arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    if image_size is not None and arr.shape[2:] != (image_size, image_size):
        Image = pillow()
        out = np.empty((len(arr), arr.shape[1], image_size, image_size), dtype=np.uint8)
        for i, img in enumerate(arr):
            pil = Image.fromarray(img[0], "L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0), "RGB")
            fitted = np.asarray(_fit(pil, image_size))
            out[i] = fitted[None] if fitted.ndim == 2 else fitted.transpose(2, 0, 1)
        arr = out
    if arr is original:  # nothing to convert
        return u8
    return torch.from_numpy(np.ascontiguousarray(arr)) if is_torch else arr
