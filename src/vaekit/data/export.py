"""Writing a dataset out as a folder of PNG files that loads back identically."""

from __future__ import annotations

import os
import pathlib

from .decode import pillow
from .formats import load_dataset
from .images import ImageData

__all__ = ["export_png"]


def export_png(
    data: ImageData | str, folder: str | os.PathLike, *, limit_train: int | None = None, limit_test: int | None = None
) -> pathlib.Path:
    """Write a dataset as a folder of PNG files that :func:`vaekit.load_dataset` reads back identically.

    ``data`` is an :class:`ImageData` or a dataset name (``"mnist"``).  Writes
    ``folder/train/<label>/<index>.png`` and ``folder/test/<label>/<index>.png`` (no
    ``<label>`` level for unlabelled data), ``<index>`` being the image's position in its
    split, zero-padded to the same width, so that the folder loads back in the same order
    with the same bytes and labels.  ``limit_train`` / ``limit_test`` keep only the first
    images.  Returns ``folder``.
    """
    Image = pillow()
    if not isinstance(data, ImageData):
        data = load_dataset(data)
    folder = pathlib.Path(folder)
    for split, limit in (("train", limit_train), ("test", limit_test)):
        u8 = getattr(data, f"{split}_uint8")[:limit]  # [n, C, H, W]
        labels = getattr(data, f"{split}_labels")[:limit]  # [n]
        width = max(5, len(str(len(u8) - 1)))
        for i, (img, label) in enumerate(zip(u8.numpy(), labels.tolist())):
            where = folder / split / str(label) if label >= 0 else folder / split
            where.mkdir(parents=True, exist_ok=True)
            pil = Image.fromarray(img[0], "L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0), "RGB")
            pil.save(where / f"{i:0{width}d}.png")
    return folder
