"""Image datasets for vaekit: MNIST (shipped), Fashion-MNIST, IDX folders, and your own images.

Everything here reads the IDX format of LeCun's MNIST distribution: a 4-byte
magic number ``00 00 <dtype> <ndim>``, ``ndim`` big-endian uint32 sizes, then
the raw payload.  Files may be gzip-compressed (recognised by the gzip magic
``1f 8b``, not by the file name) or raw.

Sources understood by :func:`load_dataset`:

* ``"mnist"`` -- the four MNIST files shipped inside the package
  (``vaekit/assets/mnist``).  The decompressed bytes of each file are checked
  against :data:`MNIST_MD5` once; the verified arrays are then cached as
  ``.npy`` files (plus a small JSON sidecar recording the source's identity)
  so later loads skip both gunzip and MD5.
* ``"fashion-mnist"`` -- Debian's ``dataset-fashion-mnist`` package, in
  :data:`FASHION_MNIST_DIR`.  Cached the same way, without a checksum table.
* any folder holding the four IDX files, gzip'd or not (not cached and not
  checksummed: there is nothing to check them against).
* your own images: any other folder (of image files) or a ``.npy`` / ``.npz`` file,
  imported once into the cache by :mod:`vaekit.imagefiles`.  :data:`DATASET_FORMATS`
  maps each format to its loader and :func:`detect_format` picks one for a path.

Every dataset comes as an :class:`ImageData` holding uint8 images ``[N, C, H, W]``
(memory-mapped where cached), with float32 views in ``[0, 1]`` computed on first access.

Every problem with the data raises :class:`DatasetError`, whose message names
the file or argument, what was seen and what was expected.

Importing this module has no side effects: no file is read or written until
a function is called.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from dataclasses import InitVar, dataclass, field
from http.client import HTTPException
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .checkpoint import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = [
    "DatasetError",
    "to_float",
    "ImageData",
    "FASHION_MNIST_DIR",
    "MNIST_MD5",
    "read_idx",
    "load_dataset",
    "mnist_files",
    "default_cache_dir",
    "download_mnist",
    "binarize",
    "BINARIZE_SEED",
    "DATASET_FORMATS",
    "detect_format",
    "check_min_images",
    "export_png",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs its files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: MD5 of the *decompressed* content of each MNIST file, keyed by the name of
#: the (gzip'd) file as shipped and as served by the MNIST mirrors.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

# The four files of an MNIST-style dataset, by role, under their canonical
# (un-gzipped) names.  Order matters: it is the order files are loaded in.
_BASENAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_NAMED_DATASETS = ("mnist", "fashion-mnist")
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_CACHE_FORMAT = 1  # bump to invalidate every existing cache entry


class DatasetError(ValueError):
    """A dataset file or argument is missing, malformed or fails its checksum."""


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in 0..255 -> float32 in [0, 1] (``u8 / 255``, the numbers of ImageData's float views); floats unchanged."""
    return images if images.is_floating_point() else images.to(torch.float32).div_(255.0)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image dataset split into train and test parts, held as bytes.

    ``train_uint8`` / ``test_uint8`` are ``[N, C, H, W]`` uint8 tensors (for cached
    sources, copy-on-write memory maps of the cache's ``.npy`` files: pages are read from
    disk when touched, and writing into the tensor never reaches the file).
    ``train_images`` / ``test_images`` are the same images as float32 in ``[0, 1]``
    (``u8.to(torch.float32).div_(255.0)``), computed on first access and kept.
    Labels are ``[N]`` int64; a dataset without labels has ``-1`` everywhere
    (``info["labelled"]`` is False).  ``info`` describes where the data came from: source
    kind, path, split rule, skipped files, classes, image size, channels, cache.

    Built from floats (``ImageData(name, train_images=x, ...)``, or
    ``dataclasses.replace(data, train_images=x)``), the floats are kept as given and the
    bytes are ``round(x * 255)``.

    ``eq=False``: comparing tensors with ``==`` is elementwise, so the
    dataclass-generated ``__eq__`` would raise; compare fields with
    :func:`torch.equal` instead.
    """

    name: str  # "mnist", "fashion-mnist" or the path
    train_uint8: torch.Tensor | None = None  # [N, C, H, W] uint8 (MNIST: N=60000, C=1, H=W=28)
    train_labels: torch.Tensor | None = None  # [N] int64 (-1: no label)
    test_uint8: torch.Tensor | None = None  # [M, C, H, W] uint8 (MNIST: M=10000)
    test_labels: torch.Tensor | None = None  # [M] int64
    info: dict = field(default_factory=dict)
    train_images: InitVar[torch.Tensor | None] = None  # floats instead of bytes (see above)
    test_images: InitVar[torch.Tensor | None] = None

    def __post_init__(self, train_images: torch.Tensor | None, test_images: torch.Tensor | None) -> None:
        object.__setattr__(self, "_floats", {})
        for split, floats in (("train", train_images), ("test", test_images)):
            u8 = getattr(self, f"{split}_uint8")
            if floats is not None and (u8 is None or getattr(floats, "_vaekit_bytes", None) is not u8):
                # new floats (not this object's own float view, which dataclasses.replace passes back)
                if not isinstance(floats, torch.Tensor) or not floats.is_floating_point() or floats.ndim != 4:
                    raise DatasetError(
                        f"{split}_images must be a float tensor [N, C, H, W] in [0, 1], got "
                        f"{type(floats).__name__} {tuple(getattr(floats, 'shape', ()))}"
                    )
                u8 = floats.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
                object.__setattr__(self, f"{split}_uint8", u8)
            if u8 is None:
                raise DatasetError(f"ImageData needs {split}_uint8 (or {split}_images)")
            if u8.dtype != torch.uint8 or u8.ndim != 4:
                raise DatasetError(f"{split}_uint8 must be a uint8 tensor [N, C, H, W], got {u8.dtype} {tuple(u8.shape)}")
            if floats is not None:
                self._floats[split] = floats
            labels = getattr(self, f"{split}_labels")
            if labels is None:
                object.__setattr__(self, f"{split}_labels", torch.full((len(u8),), -1, dtype=torch.int64))

    def given_floats(self, split: str) -> torch.Tensor | None:
        """The floats this dataset was built from for ``split`` ("train" or "test"), or None if it holds bytes."""
        x = self._floats.get(split)
        return x if x is not None and getattr(x, "_vaekit_bytes", None) is None else None

    def _float_view(self, split: str) -> torch.Tensor:
        x = self._floats.get(split)
        if x is None:
            u8 = getattr(self, f"{split}_uint8")
            x = to_float(u8)  # [N, C, H, W] in [0, 1]
            x._vaekit_bytes = u8  # lets dataclasses.replace recognise it as derived, not new
            self._floats[split] = x
        return x

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, "
            f"train_uint8={tuple(self.train_uint8.shape)}, "
            f"test_uint8={tuple(self.test_uint8.shape)})"
        )


# After the dataclass is built, so that __init__ keeps the InitVars' None defaults.
ImageData.train_images = property(
    lambda self: self._float_view("train"),
    doc="[N, C, H, W] float32 in [0, 1], computed from train_uint8 on first access and kept",
)
ImageData.test_images = property(
    lambda self: self._float_view("test"),
    doc="[M, C, H, W] float32 in [0, 1], computed from test_uint8 on first access and kept",
)


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


def _read_bytes(path: pathlib.Path) -> bytes:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file: {exc}") from exc
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DatasetError(
            f"{path}: corrupt gzip data ({exc}); expected a valid gzip stream "
            f"since the file starts with the gzip magic 1f 8b"
        ) from exc


def _parse_idx(data: bytes, path: pathlib.Path) -> np.ndarray:
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
    return _parse_idx(_read_bytes(path), path)


# --------------------------------------------------------------------------
# File locations
# --------------------------------------------------------------------------


def mnist_files() -> dict[str, pathlib.Path]:
    """The four MNIST files shipped with vaekit.

    Keys: ``"train_images"``, ``"train_labels"``, ``"test_images"``,
    ``"test_labels"``; values are paths of the ``.gz`` files (which are not
    checked for existence here).
    """
    folder = pathlib.Path(__file__).resolve().parent / "assets" / "mnist"
    return {role: folder / f"{base}.gz" for role, base in _BASENAMES.items()}


def default_cache_dir() -> pathlib.Path:
    """Folder for vaekit's cached arrays.

    ``$VAEKIT_CACHE`` if set, else ``$XDG_CACHE_HOME/vaekit`` (when that is an
    absolute path, as the XDG spec requires), else ``~/.cache/vaekit``.  The
    folder is not created here.
    """
    explicit = os.environ.get("VAEKIT_CACHE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return pathlib.Path(xdg) / "vaekit"
    return pathlib.Path.home() / ".cache" / "vaekit"


def _candidate_names(base: str) -> list[str]:
    """File names accepted for one IDX file, most preferred first.

    Raw files win over ``.gz`` (no decompression); the dotted spelling
    ``train-images.idx3-ubyte`` used by some mirrors is accepted too.
    """
    dotted = base.replace("-idx", ".idx", 1)
    return [base, f"{base}.gz", dotted, f"{dotted}.gz"]


def _find_idx_files(folder: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
    """Locate the four IDX files in ``folder``: (found by role, missing names)."""
    found: dict[str, pathlib.Path] = {}
    missing: list[str] = []
    for role, base in _BASENAMES.items():
        for name in _candidate_names(base):
            candidate = folder / name
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    return found, missing


# --------------------------------------------------------------------------
# Array cache
# --------------------------------------------------------------------------


class _ArrayCache:
    """``.npy`` arrays plus JSON sidecars recording where each came from.

    An entry ``<key>.npy`` is trusted only if ``<key>.json`` matches the
    source file's resolved path, size and mtime, the cache format, and (when
    a checksum table applies) the expected MD5.  Any mismatch or unreadable
    file is a miss: the source is read and verified again.  Write failures
    disable the cache for the rest of the load with one warning.
    """

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.writable = True

    @staticmethod
    def _identity(source: pathlib.Path) -> dict:
        st = source.stat()
        return {
            "source": str(source.resolve()),
            "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns,
        }

    def get(self, key: str, source: pathlib.Path, expected_md5: str | None) -> np.ndarray | None:
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            if not isinstance(meta, dict) or meta.get("format") != _CACHE_FORMAT:
                return None
            identity = self._identity(source)
            if any(meta.get(k) != v for k, v in identity.items()):
                return None
            if expected_md5 is not None and meta.get("md5") != expected_md5:
                return None
            # copy-on-write map: pages are read when touched, the array is writable (so torch does
            # not warn) and writes stay in this process
            array = np.load(self.folder / f"{key}.npy", mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, unreadable, bad JSON/npy
            return None
        if array.dtype != np.uint8 or list(array.shape) != meta.get("shape"):
            return None
        return array

    def put(self, key: str, source: pathlib.Path, array: np.ndarray, md5: str) -> None:
        if not self.writable:
            return
        try:
            meta = {
                "format": _CACHE_FORMAT,
                **self._identity(source),
                "md5": md5,
                "shape": list(array.shape),
            }
            self.folder.mkdir(parents=True, exist_ok=True)
            # Array first, sidecar second: a sidecar never vouches for a
            # half-written array.
            atomic_write(self.folder / f"{key}.npy", lambda fh: np.save(fh, array, allow_pickle=False))
            atomic_write(
                self.folder / f"{key}.json",
                lambda fh: fh.write(json.dumps(meta, indent=1).encode()),
            )
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"vaekit: cannot write the dataset cache in {self.folder} ({exc}); "
                f"loading without a cache",
                RuntimeWarning,
                stacklevel=4,
            )


def _load_array(
    path: pathlib.Path,
    *,
    cache: _ArrayCache | None = None,
    cache_key: str | None = None,
    expected_md5: str | None = None,
) -> np.ndarray:
    """Read one IDX file, through the cache when given, checking its MD5 when given."""
    if cache is not None and cache_key is not None:
        hit = cache.get(cache_key, path, expected_md5)
        if hit is not None:
            return hit
    data = _read_bytes(path)
    md5 = hashlib.md5(data).hexdigest()
    if expected_md5 is not None and md5 != expected_md5:
        raise DatasetError(
            f"{path}: MD5 checksum mismatch of the decompressed content: "
            f"expected {expected_md5}, got {md5}; the file is corrupt or was "
            f"modified (reinstall vaekit or fetch a fresh copy with "
            f"vaekit.data.download_mnist)"
        )
    array = _parse_idx(data, path)
    if cache is not None and cache_key is not None:
        cache.put(cache_key, path, array, md5)
    return array


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


def _fashion_mnist_files() -> dict[str, pathlib.Path]:
    folder = pathlib.Path(FASHION_MNIST_DIR)
    found, missing = _find_idx_files(folder) if folder.is_dir() else ({}, list(_BASENAMES.values()))
    if missing:
        what = "not found" if not folder.is_dir() else f"incomplete (missing {', '.join(missing)})"
        raise DatasetError(
            f"Fashion-MNIST is missing: {folder} is {what}. Install it with "
            f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or pass "
            f"load_dataset() the path of a folder with the four IDX files "
            f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz or not)"
        )
    return found


def _folder_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    found, missing = _find_idx_files(folder)
    if missing:
        raise DatasetError(
            f"dataset folder {folder} lacks {', '.join(missing)}; expected the four "
            f"IDX files {', '.join(_BASENAMES.values())} (each optionally .gz)"
        )
    return found


def _check_split(
    images: np.ndarray,
    labels: np.ndarray,
    image_path: pathlib.Path,
    label_path: pathlib.Path,
) -> None:
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


def _to_uint8(array: np.ndarray) -> torch.Tensor:
    n, h, w = array.shape
    # [N, H, W] uint8 -> [N, 1, H, W] uint8, sharing memory (a view of the cache's memory map)
    return torch.from_numpy(array).reshape(n, 1, h, w)


def _to_labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))  # [N] int64


#: Seed of the one-off Bernoulli draw of a statically binarized split (and of the test set
#: under dynamic binarization), so that every run is measured on the same binary images.
BINARIZE_SEED = 1234


def binarize(images: torch.Tensor, seed: int | None = BINARIZE_SEED) -> torch.Tensor:
    """One Bernoulli draw per pixel: 1 with probability equal to the grey level, else 0.

    ``images`` [N, C, H, W] in [0, 1] -> the same shape, values in {0., 1.}. With a ``seed``
    the draw comes from its own CPU generator (the same result every time, whatever the
    global RNG state); with ``seed=None`` from the global generator of the images' device.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [0, 1], got {type(images).__name__}")
    if seed is None:
        return torch.bernoulli(images)
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.detach().cpu(), generator=gen).to(images.device)


def load_dataset(
    name: str | os.PathLike = "mnist",
    cache_dir: str | os.PathLike | None = None,
    config: "DataConfig | None" = None,
    *,
    progress: bool | None = None,
) -> ImageData:
    """Load a dataset as uint8 tensors (and float32 views in ``[0, 1]``, on first access).

    ``name`` is ``"mnist"`` (the copy shipped with vaekit, MD5-verified),
    ``"fashion-mnist"`` (from :data:`FASHION_MNIST_DIR`, Debian's
    ``dataset-fashion-mnist``), or a path, whose format :func:`detect_format` finds
    among :data:`DATASET_FORMATS`: a folder holding the four IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``),
    a folder of image files, or a ``.npy`` / ``.npz`` file (see :mod:`vaekit.imagefiles`).
    The two names take precedence over folders of the same name; write ``./mnist`` for
    such a folder.

    ``config`` (a :class:`vaekit.config.DataConfig`) sets the image size, channels, test
    fraction and whether bad image files are skipped; ``progress`` shows a progress bar
    while images are imported (None: when stderr is a terminal).

    The named datasets are cached as ``.npy`` arrays in ``cache_dir`` (default
    :func:`default_cache_dir`) and memory-mapped from there; MNIST's checksums are
    verified when an entry is made, so cached loads skip gunzip and MD5.  A cache that
    cannot be written only costs speed (a ``RuntimeWarning`` says so).  IDX folders are
    read directly every time; image folders and array files are imported once into the
    cache and re-imported when a file or an option changes.

    IDX images may be any height and width, the same for train and test; labels
    are returned as they are stored (not checked against 0..9).
    """
    from .config import DataConfig

    config = config if config is not None else DataConfig()
    if name in _NAMED_DATASETS:
        return _load_named(str(name), cache_dir, config)
    path = pathlib.Path(name)
    fmt = detect_format(path)
    return DATASET_FORMATS[fmt](path, config=config, cache_dir=cache_dir, progress=progress)


def _load_named(name: str, cache_dir: str | os.PathLike | None, config: "DataConfig") -> ImageData:
    if name == "mnist":
        files = mnist_files()
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise DatasetError(
                f"shipped MNIST files are missing: {', '.join(missing)}; expected them "
                f"inside the vaekit package (reinstall vaekit, or fetch a copy with "
                f"download_mnist() and load that folder)"
            )
    else:
        files = _fashion_mnist_files()
    cache = _ArrayCache(pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir())
    return _load_idx(name, files, cache, config, source=name)


def _load_idx_folder(
    path: pathlib.Path, *, config: "DataConfig", cache_dir: str | os.PathLike | None = None, progress: bool | None = None
) -> ImageData:
    """The ``"idx"`` format: a folder with the four IDX files (read directly, not cached)."""
    return _load_idx(str(path), _folder_files(path), None, config, source="idx")


def _load_idx(
    label: str, files: dict[str, pathlib.Path], cache: _ArrayCache | None, config: "DataConfig", *, source: str
) -> ImageData:
    arrays: dict[str, np.ndarray] = {}
    for role, base in _BASENAMES.items():
        expected = MNIST_MD5.get(f"{base}.gz") if label == "mnist" else None
        if label == "mnist" and expected is None:
            raise DatasetError(
                f"MNIST_MD5 has no checksum for {base}.gz; expected one for each of the four files"
            )
        arrays[role] = _load_array(
            files[role],
            cache=cache,
            cache_key=f"{label}-{role.replace('_', '-')}" if cache is not None else None,
            expected_md5=expected,
        )

    for split in ("train", "test"):
        _check_split(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            files[f"{split}_images"],
            files[f"{split}_labels"],
        )
    train_hw = arrays["train_images"].shape[1:]
    test_hw = arrays["test_images"].shape[1:]
    if train_hw != test_hw:
        raise DatasetError(
            f"image size mismatch: {files['train_images']} holds {train_hw[0]}x{train_hw[1]} "
            f"images but {files['test_images']} holds {test_hw[0]}x{test_hw[1]}; expected "
            f"train and test images of the same size"
        )
    train_u8 = _to_uint8(arrays["train_images"])  # [N, 1, H, W]
    test_u8 = _to_uint8(arrays["test_images"])  # [M, 1, H, W]
    info = {
        "source": source,
        "path": str(files["train_images"].parent),
        "split": "given",
        "test_fraction": None,
        "split_seed": None,
        "labelled": True,
        "classes": None,
        "skipped": 0,
        "skipped_files": [],
        "cache": str(cache.folder) if cache is not None else None,
    }
    if config.image_size is not None or config.channels is not None:
        from .imagefiles import conform_uint8

        train_u8 = conform_uint8(train_u8, config.image_size, config.channels)
        test_u8 = conform_uint8(test_u8, config.image_size, config.channels)
    info.update(
        image_size=list(train_u8.shape[-2:]),
        channels=int(train_u8.shape[1]),
        image_size_rule="given" if config.image_size is not None else "from the data",
        channels_rule="given" if config.channels is not None else "from the data",
        train=len(train_u8),
        test=len(test_u8),
    )
    return ImageData(
        name=label,
        train_uint8=train_u8,
        train_labels=_to_labels(arrays["train_labels"]),  # [N]
        test_uint8=test_u8,
        test_labels=_to_labels(arrays["test_labels"]),  # [M]
        info=info,
    )


# --------------------------------------------------------------------------
# Formats of a dataset given by path
# --------------------------------------------------------------------------


def _load_image_folder(path: pathlib.Path, **kwargs) -> ImageData:
    from .imagefiles import load_image_folder

    return load_image_folder(path, **kwargs)


def _load_array_file(path: pathlib.Path, **kwargs) -> ImageData:
    from .imagefiles import load_array_file

    return load_array_file(path, **kwargs)


#: Dataset formats by name: ``loader(path, *, config, cache_dir, progress) -> ImageData``.
#: :func:`detect_format` picks one for a path; a new format is one loader here and one
#: rule there.
DATASET_FORMATS: dict[str, Callable[..., ImageData]] = {
    "idx": _load_idx_folder,
    "image-folder": _load_image_folder,
    "npy": _load_array_file,
    "npz": _load_array_file,
}


def detect_format(path: str | os.PathLike) -> str:
    """The :data:`DATASET_FORMATS` key for ``path``.

    A ``.npy`` or ``.npz`` file is that format; a folder with any of the four IDX files
    is ``"idx"``; any other folder is ``"image-folder"``.  Anything else raises
    :class:`DatasetError`.
    """
    path = pathlib.Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".npy", ".npz"):
            return suffix[1:]
        raise DatasetError(
            f"dataset {str(path)!r} is a file of an unknown kind; expected a .npy or .npz array file, "
            f"or a folder (of image files, or with the four IDX files)"
        )
    if path.is_dir():
        found, _ = _find_idx_files(path)
        return "idx" if found else "image-folder"  # some IDX files only: "idx" names the missing ones
    raise DatasetError(
        f"unknown dataset {str(path)!r}: not an existing folder or file; expected "
        f"one of {', '.join(repr(n) for n in _NAMED_DATASETS)}, a folder (of image files, "
        f"or with the four IDX files) or a .npy/.npz file"
    )


def export_png(data: ImageData | str, folder: str | os.PathLike, **kwargs) -> pathlib.Path:
    """Write a dataset as PNG files that load back identically: see :func:`vaekit.imagefiles.export_png`."""
    from .imagefiles import export_png as export

    return export(data, folder, **kwargs)


def check_min_images(data: ImageData, batch_size: int, processes: int = 1) -> None:
    """Raise :class:`DatasetError` if ``data`` has fewer training images than one batch.

    ``batch_size`` is the global batch: ``processes`` data-parallel processes of
    ``batch_size // processes`` images each (the message then says so).
    """
    n = len(data.train_uint8)
    if n < batch_size:
        if processes > 1:
            raise DatasetError(
                f"dataset {data.name} has {n} training images, fewer than one global batch of {batch_size} "
                f"(--batch-size {batch_size // processes} x {processes} processes); lower --batch-size to at most "
                f"{max(1, n // processes)}, use fewer processes or add images"
            )
        raise DatasetError(
            f"dataset {data.name} has {n} training images, fewer than one batch of {batch_size}; "
            f"lower --batch-size to at most {n} or add images"
        )


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def _file_md5(path: pathlib.Path) -> str | None:
    """MD5 of a file's decompressed content, or None if it cannot be read."""
    try:
        return hashlib.md5(_read_bytes(path)).hexdigest()
    except DatasetError:
        return None


def download_mnist(
    dest: str | os.PathLike,
    base_url: str = "https://ossci-datasets.s3.amazonaws.com/mnist/",
    *,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Download the four MNIST ``.gz`` files into ``dest`` and verify them.

    Each file is fetched from ``base_url + name`` (any scheme urllib handles,
    ``file://`` included) into a temporary file in ``dest``, its decompressed
    MD5 is checked against :data:`MNIST_MD5`, and only then is it renamed to
    its final name.  Files already present with the right checksum are not
    fetched again; present but wrong ones are replaced.  Returns ``dest``,
    which :func:`load_dataset` accepts as a folder.

    Raises :class:`DatasetError` naming the URL for network errors, and the
    URL with expected and actual MD5 for a mismatch; no partial file is left.
    """
    dest = pathlib.Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"download_mnist: cannot create destination {dest}: {exc}") from exc
    if not base_url.endswith("/"):
        base_url += "/"

    for base in _BASENAMES.values():
        name = f"{base}.gz"
        expected = MNIST_MD5[name]
        target = dest / name
        if target.is_file() and _file_md5(target) == expected:
            continue
        url = urllib.parse.urljoin(base_url, name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()  # ~10 MB at most: verify in memory, then write
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            # URLError/HTTPError: unreachable, refused, 404...; OSError: timeouts and resets
            # mid-transfer; HTTPException: e.g. IncompleteRead; ValueError: a malformed URL.
            raise DatasetError(f"could not download {url}: {exc}") from exc
        try:
            actual = hashlib.md5(gzip.decompress(payload) if payload[:2] == _GZIP_MAGIC else payload).hexdigest()
        except (OSError, EOFError, zlib.error):
            actual = "unreadable or corrupt gzip data"
        if actual != expected:
            raise DatasetError(
                f"{url}: MD5 checksum mismatch of the decompressed content: "
                f"expected {expected}, got {actual}; nothing was saved to {target}"
            )
        atomic_write_bytes(target, payload)
    return dest
