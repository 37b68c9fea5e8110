"""The IDX format of LeCun's MNIST distribution, and the four files of an MNIST-style dataset.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, ``ndim`` big-endian uint32
sizes, then the raw payload. Files may be gzip-compressed (recognised by the gzip magic
``1f 8b``, not by the file name) or raw. A dataset is four of them (:data:`IDX_FILES`):
train and test images ``[N, H, W]`` and labels ``[N]``; :data:`MNIST_MD5` holds MNIST's
checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pathlib
import zlib

import numpy as np
import torch

from .decode import conform_uint8
from .errors import DatasetError
from .images import ImageData
from .info import DatasetInfo

__all__ = ["read_idx", "MNIST_MD5", "IDX_FILES", "find_idx_files", "read_idx_dataset", "idx_dataset"]

#: MD5 of the *decompressed* content of each MNIST file, keyed by the name of
#: the (gzip'd) file as shipped and as served by the MNIST mirrors.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

#: The four files of an MNIST-style dataset, by role, under their canonical (un-gzipped)
#: names. Order matters: it is the order files are loaded in.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


# ----------------------------------------------------------------------------- one file


def read_bytes(path: pathlib.Path) -> bytes:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file: {exc}") from exc
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DatasetError(
            f"{path}: corrupt gzip data ({exc}); expected a valid gzip stream "
            f"since the file starts with the gzip magic 1f 8b"
        ) from exc


def parse_idx(data: bytes, path: pathlib.Path) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; ``path`` is for messages."""
    if len(data) < 4:
        raise DatasetError(
            f"{path}: too short to be an IDX file: {len(data)} bytes, "
            f"expected at least a 4-byte magic number"
        )
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0:
        raise DatasetError(
            f"{path}: bad IDX magic number 0x{magic:08x}: expected it to start "
            f"with two zero bytes (e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    if type_code != _IDX_UBYTE:
        kind = _IDX_TYPE_NAMES.get(type_code, "unknown")
        raise DatasetError(
            f"{path}: unsupported IDX data type code 0x{type_code:02x} ({kind}) in "
            f"magic number 0x{magic:08x}; expected 0x08 (unsigned byte)"
        )
    if ndim == 0:
        raise DatasetError(
            f"{path}: IDX magic number 0x{magic:08x} declares 0 dimensions; "
            f"expected at least 1"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} "
            f"header bytes, file has {len(data)}"
        )
    dims = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = math.prod(dims)
    actual = len(data) - header_len
    if actual < expected:
        raise DatasetError(
            f"{path}: truncated IDX payload: shape {dims} needs {expected} bytes "
            f"after the {header_len}-byte header, found only {actual}"
        )
    if actual > expected:
        raise DatasetError(
            f"{path}: {actual - expected} unexpected trailing bytes after the IDX "
            f"payload: shape {dims} needs {expected} bytes after the "
            f"{header_len}-byte header, found {actual}"
        )
    # .copy(): frombuffer over ``bytes`` is read-only; callers get a normal array.
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_len).reshape(dims).copy()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file of unsigned bytes, gzip'd or raw.

    Compression is detected from the content (gzip magic ``1f 8b``), not the
    file name.  Raises :class:`DatasetError` for a missing or unreadable file,
    corrupt gzip data, a bad magic number, a data type other than ``0x08``
    (unsigned byte), zero dimensions, or a payload whose length is not the
    product of the declared sizes (truncated or with trailing bytes).

    Returns a writable ``uint8`` array of the declared shape, e.g.
    ``[60000, 28, 28]`` for MNIST's training images, ``[60000]`` for labels.
    """
    path = pathlib.Path(path)
    return parse_idx(read_bytes(path), path)


# ----------------------------------------------------------------------------- the four files of a dataset


def _candidate_names(base: str) -> list[str]:
    """File names accepted for one IDX file, most preferred first.

    Raw files win over ``.gz`` (no decompression); the dotted spelling
    ``train-images.idx3-ubyte`` used by some mirrors is accepted too.
    """
    dotted = base.replace("-idx", ".idx", 1)
    return [base, f"{base}.gz", dotted, f"{dotted}.gz"]


def find_idx_files(folder: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
    """Locate the four IDX files in ``folder``: (found by role, missing names)."""
    found: dict[str, pathlib.Path] = {}
    missing: list[str] = []
    for role, base in IDX_FILES.items():
        for name in _candidate_names(base):
            candidate = folder / name
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    return found, missing


def read_idx_dataset(
    files: dict[str, pathlib.Path], checksums: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Read and check the four files: their arrays by role.

    With ``checksums`` (expected MD5 by role) each file is verified before it is parsed.
    Nothing is returned (or cached) unless all four pass. Images must be ``[N, H, W]`` with ``N`` labels
    ``[N]``, train and test of the same size.
    """
    arrays: dict[str, np.ndarray] = {}
    for role in IDX_FILES:
        data = read_bytes(files[role])
        expected = (checksums or {}).get(role)
        md5 = hashlib.md5(data).hexdigest() if expected is not None else None
        if md5 != expected:
            raise DatasetError(
                f"{files[role]}: MD5 checksum mismatch of the decompressed content: "
                f"expected {expected}, got {md5}; the file is corrupt or was "
                f"modified (reinstall vaekit or fetch a fresh copy with "
                f"vaekit.data.download_mnist)"
            )
        arrays[role] = parse_idx(data, files[role])
    for split in ("train", "test"):
        _check_split(arrays[f"{split}_images"], arrays[f"{split}_labels"], files[f"{split}_images"], files[f"{split}_labels"])
    train_hw, test_hw = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_hw != test_hw:
        raise DatasetError(
            f"image size mismatch: {files['train_images']} holds {train_hw[0]}x{train_hw[1]} "
            f"images but {files['test_images']} holds {test_hw[0]}x{test_hw[1]}; expected "
            f"train and test images of the same size"
        )
    return arrays


def _check_split(images: np.ndarray, labels: np.ndarray, image_path: pathlib.Path, label_path: pathlib.Path) -> None:
    if images.ndim != 3:
        raise DatasetError(
            f"{image_path}: images have shape {images.shape}; expected 3 "
            f"dimensions [count, height, width]"
        )
    if labels.ndim != 1:
        raise DatasetError(
            f"{label_path}: labels have shape {labels.shape}; expected 1 dimension [count]"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"image/label count mismatch: {image_path} holds {len(images)} images "
            f"but {label_path} holds {len(labels)} labels"
        )


def idx_dataset(name: str, source: str, files: dict[str, pathlib.Path], arrays: dict[str, np.ndarray], config) -> ImageData:
    """The ImageData of the four arrays of :func:`read_idx_dataset`, converted to ``config``'s size and channels.

    Images [N, H, W] become [N, 1, H, W] uint8 (sharing memory unless converted), labels [N] int64.
    """
    tensors = {}
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        n, h, w = images.shape
        u8 = torch.from_numpy(images).reshape(n, 1, h, w)  # [N, H, W] -> [N, 1, H, W]
        if config.image_size is not None or config.channels is not None:
            u8 = conform_uint8(u8, config.image_size, config.channels)  # [N, C, S, S]
        tensors[f"{split}_uint8"] = u8
        tensors[f"{split}_labels"] = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))  # [N]
    info = DatasetInfo(source=source, path=str(files["train_images"].parent), labelled=True)
    info.set_shape(config, tensors["train_uint8"].shape[1:])
    info.train, info.test = len(tensors["train_uint8"]), len(tensors["test_uint8"])
    return ImageData(name=name, info=info, **tensors)
