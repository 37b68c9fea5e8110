"""The ``npy`` and ``npz`` formats: images in a numpy array file, imported once into the cache.

A ``.npy`` array, or an ``.npz`` with the keys ``x_train`` + ``x_test`` (labels ``y_train`` +
``y_test`` optional), ``train`` + ``test`` (same labels), or ``images`` (labels ``labels``
optional). Without a split the images are split at random with a fixed seed, like a folder without
``train/`` and ``test/``. Layouts ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` with C = 1
or 3; uint8 (0-255) or floats in [0, 1] (stored as ``round(x * 255)``). A ``.npy`` is
memory-mapped and read in chunks, so that it is never held whole.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Iterator

import numpy as np

from ..cache import import_options, load_cached, save_npy, write_uint8_npy
from ..config import DataConfig
from ..decode import conform_uint8
from ..errors import DatasetError
from ..images import ImageData
from ..info import DatasetInfo
from ..split import SPLIT_SEED, seeded_split
from . import FORMATS, DatasetFormat

__all__ = ["Npy", "Npz"]

_NPZ_SCHEMAS = (  # (image keys by split, label keys by split)
    ({"train": "x_train", "test": "x_test"}, {"train": "y_train", "test": "y_test"}),
    ({"train": "train", "test": "test"}, {"train": "y_train", "test": "y_test"}),
    ({"all": "images"}, {"all": "labels"}),
)
_EXPECTED_KEYS = "x_train + x_test (+ y_train, y_test), train + test (+ y_train, y_test), or images (+ labels)"


def _as_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """A view of an image array as [N, C, H, W] (C = 1 or 3), or DatasetError."""
    shape = tuple(array.shape)
    expected = "expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3"
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        last, second = shape[3] in (1, 3), shape[1] in (1, 3)
        if last and not second:
            return array.transpose(0, 3, 1, 2)
        if second and not last:
            return array
        if last and second:
            raise DatasetError(f"{where}: shape {shape} is ambiguous (channels first or last?); {expected}, unambiguously")
    raise DatasetError(f"{where}: shape {shape}; {expected}")


def _check_values(array: np.ndarray, where: str, chunk: int = 4096) -> None:
    """uint8, or floats in [0, 1]: else DatasetError naming the dtype and range found.

    Reads the array in chunks of rows, so that a memory-mapped .npy is never held whole.
    """
    if array.dtype == np.uint8:
        return
    numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    lo = hi = None
    finite = True
    if numeric and array.size:
        for start in range(0, len(array), chunk):
            part = np.asarray(array[start : start + chunk])
            if np.issubdtype(part.dtype, np.floating) and not np.isfinite(part).all():
                finite = False
                part = part[np.isfinite(part)]
                if not part.size:
                    continue
            plo, phi = part.min(), part.max()
            lo, hi = (plo, phi) if lo is None else (min(lo, plo), max(hi, phi))
    found = f"{array.dtype} values" + (f" in [{lo}, {hi}]" if lo is not None else "")
    if np.issubdtype(array.dtype, np.floating):
        if finite and (lo is None or (lo >= 0.0 and hi <= 1.0)):
            return
        nonfinite = "" if finite else " (and NaN or Inf)"
        raise DatasetError(
            f"{where}: {found}{nonfinite}; expected floats in [0, 1] or uint8 in 0-255 (scale the values, e.g. x / 255)"
        )
    raise DatasetError(f"{where}: {found}; expected uint8 in 0-255 or floats in [0, 1] (convert, e.g. x.astype(np.uint8))")


def _u8_chunks(nchw: np.ndarray, image_size: int | None, channels: int | None, chunk: int = 1024) -> Iterator[np.ndarray]:
    """[k, C, H, W] uint8 chunks of an [N, C, H, W] uint8/float array, converted as the options say."""
    for start in range(0, len(nchw), chunk):
        part = np.asarray(nchw[start : start + chunk])
        if part.dtype != np.uint8:
            part = np.rint(part.astype(np.float64) * 255.0).astype(np.uint8)
        yield conform_uint8(part, image_size, channels)


class _ArrayFile(DatasetFormat):
    """The base of the array-file formats: a file with this format's suffix, read through the cache."""

    priority = 20

    @classmethod
    def detect(cls, source: str | os.PathLike) -> bool:
        path = pathlib.Path(source)
        return path.suffix.lower() == f".{cls.name}" and path.is_file()

    def load(self, source, *, config: DataConfig, cache_dir=None, progress=None) -> ImageData:
        path = pathlib.Path(source)
        try:
            st = path.stat()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
        listing = [[path.name, st.st_size, st.st_mtime_ns]]
        return load_cached(
            str(path), self.name, path.resolve(), import_options(config), listing, cache_dir,
            lambda folder: _import_arrays(path, self.name, config, folder),
        )


@FORMATS.register
class Npy(_ArrayFile):
    """A .npy file of images [N, H, W], [N, H, W, C] or [N, C, H, W] (split at random, seeded)."""

    name = "npy"
    accepts = "a .npy file"


@FORMATS.register
class Npz(_ArrayFile):
    """A .npz file of images (keys x_train + x_test, train + test, or images; labels optional)."""

    name = "npz"
    accepts = "a .npz file"


def _read_arrays(source: pathlib.Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None], dict[str, str]]:
    """(images by split, labels by split, key names by split) of an array file; split "all" = no split given."""
    try:
        if kind == "npy":
            return {"all": np.load(source, mmap_mode="r", allow_pickle=False)}, {"all": None}, {"all": "the array"}
        with np.load(source, allow_pickle=False) as z:
            keys = set(z.files)
            for images, labels in _NPZ_SCHEMAS:
                if set(images.values()) <= keys <= set(images.values()) | set(labels.values()):
                    have = [labels[s] in keys for s in images]
                    if any(have) and not all(have):
                        raise DatasetError(
                            f"{source}: labels for some splits only (keys {', '.join(sorted(keys))}); give "
                            f"{' and '.join(labels.values())} together, or none"
                        )
                    return (
                        {s: z[k] for s, k in images.items()},
                        {s: (z[labels[s]] if labels[s] in keys else None) for s in images},
                        {s: f"key {k!r}" for s, k in images.items()},
                    )
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{source}: not a readable .{kind} file ({exc}); expected one written by numpy.save{'z' * (kind == 'npz')}") from None
    raise DatasetError(f"{source}: keys {', '.join(sorted(keys)) or '(none)'}; expected {_EXPECTED_KEYS}")


def _import_arrays(source: pathlib.Path, kind: str, config, folder: pathlib.Path) -> dict:
    images, labels, where = _read_arrays(source, kind)
    parts: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for split, array in images.items():
        here = f"{source}: {where[split]}"
        nchw = _as_nchw(array, here)
        _check_values(array, here)
        lab = labels[split]
        if lab is not None:
            if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer) or len(lab) != len(nchw):
                raise DatasetError(
                    f"{here}: its labels have shape {lab.shape} and dtype {lab.dtype}; expected [{len(nchw)}] integers"
                )
            lab = lab.astype(np.int64)
        parts[split] = (nchw, lab)
    if "all" in parts:
        nchw, lab = parts.pop("all")
        train_idx, test_idx = seeded_split(len(nchw), config.test_fraction, str(source))
        parts = {
            "train": (nchw[train_idx] if kind == "npz" else _Rows(nchw, train_idx), None if lab is None else lab[train_idx]),
            "test": (nchw[test_idx] if kind == "npz" else _Rows(nchw, test_idx), None if lab is None else lab[test_idx]),
        }
    digest = hashlib.sha256()
    shapes = {}
    for split, (nchw, lab) in parts.items():
        if len(nchw) == 0:
            raise DatasetError(f"{source}: the {split} split is empty; expected at least one image in it")
        first = next(_u8_chunks(nchw[:1], config.image_size, config.channels))
        n = write_uint8_npy(folder / f"{split}.npy", first.shape[1:], _u8_chunks(nchw, config.image_size, config.channels), digest)
        lab = np.full(n, -1, dtype=np.int64) if lab is None else lab
        digest.update(lab.tobytes())
        save_npy(folder / f"{split}-labels.npy", lab)
        shapes[split] = [n, *first.shape[1:]]
    chw = shapes["train"][1:]
    if shapes["test"][1:] != chw:
        raise DatasetError(
            f"{source}: train images are {chw[2]}x{chw[1]} with {chw[0]} channels but test images "
            f"{shapes['test'][3]}x{shapes['test'][2]} with {shapes['test'][1]}; pass --image-size S and --channels C"
        )
    info = DatasetInfo(source=kind, path=str(source), labelled=all(labels[s] is not None for s in labels))
    if "all" in images:
        info.set_seeded_split(config, SPLIT_SEED)
    else:
        info.split = "given (keys)"
    info.set_shape(config, chw)
    return {"shapes": shapes, "content_sha256": digest.hexdigest(), "info": info.to_dict()}


class _Rows:
    """Rows ``index`` of a (memory-mapped) array, sliced lazily so that the whole is never copied."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sl: slice) -> np.ndarray:
        return self.array[self.index[sl]]
