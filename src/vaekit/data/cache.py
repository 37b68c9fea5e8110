"""The dataset cache: every source's arrays, imported once, checked on every load, memory-mapped.

One entry per source, format and options, in ``default_cache_dir()/imports/<name>-<hash>/``
(hash: of the cache format, the format's name, the source's resolved path and the options):
``train.npy`` / ``test.npy`` (uint8 ``[N, C, H, W]``), ``train-labels.npy`` /
``test-labels.npy`` (int64 ``[N]``) and ``manifest.json``: the source's files with their sizes
and mtimes (and, where a checksum table applies, the expected MD5s), the options, the arrays'
shapes, a SHA-256 of their content and the dataset's :class:`DatasetInfo`.

A load lists the source (no decoding) and reuses the entry if that listing and the options match
the manifest and the arrays have the recorded shapes; otherwise, or if the entry is unreadable,
it imports again. Arrays are written first and the manifest last, each atomically (the old
manifest is removed before an import starts, so that a failed import leaves none); a lock file
makes concurrent loads (several training processes) import once. The arrays are memory-mapped
copy-on-write: pages are read when touched, and writes stay in the process.

A cache that cannot be written only costs speed for the sources that fit in memory
(:func:`load_cached_data`: one ``RuntimeWarning``, then the arrays in memory); for the others
(:func:`load_cached`, whose import streams into the cache) it is a :class:`DatasetError`
saying to set ``VAEKIT_CACHE``. An entry that can be read but not written is still used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import struct
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..checkpoint import atomic_write
from .errors import DatasetError
from .images import ImageData
from .info import DatasetInfo
from .split import SPLIT_SEED

__all__ = [
    "default_cache_dir", "cache_size", "import_options", "load_cached", "load_cached_data", "write_uint8_npy", "save_npy", "write_dataset",
]

_CACHE_FORMAT = 1  # bump to invalidate every cache entry
_NPY_HEADER = 256  # bytes of our .npy headers, fixed so that the count can be written last


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


def cache_size(folder: str | os.PathLike) -> int:
    """Bytes of the files in a cache entry's folder (as ``info.cache`` names it)."""
    try:
        return sum(p.stat().st_size for p in pathlib.Path(folder).iterdir() if p.is_file())
    except OSError:
        return 0


def import_options(config) -> dict[str, Any]:
    """The options of a ``DataConfig`` that an import of image files or arrays depends on (part of its entry's key)."""
    return {
        "image_size": config.image_size,
        "channels": config.channels,
        "test_fraction": config.test_fraction,
        "skip_bad_images": config.skip_bad_images,
        "split_seed": SPLIT_SEED,
    }


# ----------------------------------------------------------------------------- writing arrays


def _npy_header(shape: Sequence[int]) -> bytes:
    """A .npy v1.0 header for a C-ordered uint8 array, always _NPY_HEADER bytes long."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % (tuple(int(s) for s in shape),)
    body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
    if len(body) != _NPY_HEADER - 10:
        raise DatasetError(f"array shape {tuple(shape)} is too large for the cache's .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def write_uint8_npy(path: pathlib.Path, chw: Sequence[int], chunks: Iterable[np.ndarray], digest) -> int:
    """Stream [k, C, H, W] uint8 chunks into ``path`` atomically; return the count, feed ``digest``."""
    chw = tuple(chw)
    count = 0

    def write(fh) -> None:
        nonlocal count
        fh.write(_npy_header((0, *chw)))  # the count is not known yet: rewritten at the end
        for chunk in chunks:
            if chunk.shape[1:] != chw or chunk.dtype != np.uint8:
                raise DatasetError(f"internal error: chunk {chunk.dtype} {chunk.shape} for a {chw} uint8 array")
            data = np.ascontiguousarray(chunk).tobytes()
            digest.update(data)
            fh.write(data)
            count += len(chunk)
        fh.seek(0)
        fh.write(_npy_header((count, *chw)))
        fh.seek(0, os.SEEK_END)

    atomic_write(path, write)
    return count


def save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def write_dataset(folder: pathlib.Path, data: ImageData) -> dict[str, Any]:
    """Write an in-memory dataset into a cache entry: the manifest's fields (shapes, content hash, info)."""
    digest = hashlib.sha256()
    shapes = {}
    for split in ("train", "test"):
        u8 = np.asarray(getattr(data, f"{split}_uint8"))  # [N, C, H, W]
        write_uint8_npy(folder / f"{split}.npy", u8.shape[1:], [u8], digest)
        labels = np.asarray(getattr(data, f"{split}_labels"), dtype=np.int64)  # [N]
        digest.update(labels.tobytes())
        save_npy(folder / f"{split}-labels.npy", labels)
        shapes[split] = list(u8.shape)
    return {"shapes": shapes, "content_sha256": digest.hexdigest(), "info": data.info.to_dict()}


# ----------------------------------------------------------------------------- entries


def _entry_folder(cache_dir: str | os.PathLike | None, kind: str, source: pathlib.Path, options: dict) -> pathlib.Path:
    root = (pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "imports"
    key = json.dumps({"format": _CACHE_FORMAT, "kind": kind, "source": str(source), "options": options}, sort_keys=True)
    return root / f"{source.name[:40] or 'root'}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def _locked(folder: pathlib.Path):
    """Hold an exclusive lock on ``folder/.lock`` (one import at a time); a no-op without fcntl. OSError if unwritable."""
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / ".lock", "a+b")
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except ImportError:
            pass
        yield
    finally:
        fh.close()  # releases the lock


def _open_cached(folder: pathlib.Path, expect: dict[str, Any]) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The manifest and tensors of a valid cache entry matching ``expect``, else None (rebuild)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expect.items()):
            return None
        tensors = {}
        for split in ("train", "test"):
            images = np.load(folder / f"{split}.npy", mmap_mode="c", allow_pickle=False)
            labels = np.load(folder / f"{split}-labels.npy", allow_pickle=False)
            if (
                images.dtype != np.uint8
                or list(images.shape) != manifest["shapes"][split]
                or labels.dtype != np.int64
                or labels.shape != (images.shape[0],)
            ):
                return None
            # mmap_mode="c": a writable copy-on-write map, so torch.from_numpy does not warn
            tensors[f"{split}_uint8"] = torch.from_numpy(images)
            tensors[f"{split}_labels"] = torch.from_numpy(labels)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return manifest, tensors


def _image_data(name: str, manifest: dict, tensors: dict, folder: pathlib.Path, status: str, seconds: float) -> ImageData:
    info = DatasetInfo.from_dict(manifest.get("info"))
    info.cache, info.cache_status, info.cache_bytes = str(folder), status, cache_size(folder)
    info.import_seconds = round(seconds, 3)
    info.train, info.test = int(tensors["train_uint8"].shape[0]), int(tensors["test_uint8"].shape[0])
    return ImageData(name=name, info=info, **tensors)


def _reuse_or_build(name: str, folder: pathlib.Path, expect: dict, build: Callable[[pathlib.Path], dict]) -> ImageData:
    hit = _open_cached(folder, expect)
    if hit is not None:
        return _image_data(name, *hit, folder, "reused", 0.0)
    status = "imported" if not (folder / "manifest.json").exists() else "re-imported (files, options or cache changed)"
    t0 = time.perf_counter()
    # the old manifest goes first: if this import fails half-way, no manifest vouches for the
    # arrays it replaced (even if the files come back to what the old manifest listed)
    (folder / "manifest.json").unlink(missing_ok=True)
    manifest = {**expect, **build(folder)}
    atomic_write(folder / "manifest.json", lambda fh: fh.write(json.dumps(manifest, indent=1).encode()))
    hit = _open_cached(folder, expect)
    if hit is None:
        raise DatasetError(f"{folder}: the cache just written cannot be read back; check the disk and VAEKIT_CACHE")
    return _image_data(name, *hit, folder, status, time.perf_counter() - t0)


def load_cached(
    name: str, kind: str, source: pathlib.Path, options: dict, files: list, cache_dir: str | os.PathLike | None,
    build: Callable[[pathlib.Path], dict], *, in_memory: Callable[[], ImageData] | None = None,
) -> ImageData:
    """The dataset ``name`` from its cache entry if that matches ``files``, else ``build`` the entry and load it.

    ``kind`` is the format's name, ``source`` the resolved path read, ``options`` what the import depends on
    (each set of options has its own entry), ``files`` the listing the entry is checked against (JSON:
    [path, size, mtime_ns, ...] per file). ``build(folder)`` writes the four arrays into ``folder`` and
    returns the manifest's other fields: ``shapes`` by split, ``content_sha256`` and ``info`` (a dict).
    If the entry cannot be written: ``in_memory()`` with one RuntimeWarning if given, else DatasetError.
    """
    folder = _entry_folder(cache_dir, kind, source, options)
    expect = {"format": _CACHE_FORMAT, "kind": kind, "source": str(source), "options": options, "files": files}
    try:
        with _locked(folder):
            return _reuse_or_build(name, folder, expect, build)
    except OSError as exc:
        hit = _open_cached(folder, expect)  # an entry that can be read but not written is still good
        if hit is not None:
            return _image_data(name, *hit, folder, "reused", 0.0)
        if in_memory is None:
            raise DatasetError(
                f"cannot write the image cache in {folder} ({exc.strerror or exc}); set VAEKIT_CACHE to a writable folder"
            ) from None
        warnings.warn(
            f"vaekit: cannot write the dataset cache in {folder} ({exc.strerror or exc}); loading without a cache",
            RuntimeWarning, stacklevel=2,
        )
        return in_memory()


def load_cached_data(
    name: str, kind: str, source: pathlib.Path, options: dict, files: list, cache_dir: str | os.PathLike | None,
    read: Callable[[], ImageData],
) -> ImageData:
    """:func:`load_cached` for a source read into memory by ``read()`` (a dataset with ``info.cache`` None):
    its arrays are written into the entry; if the entry cannot be written they are used as they are."""
    got: list[ImageData] = []

    def once() -> ImageData:
        if not got:
            got.append(read())
        return got[0]

    return load_cached(name, kind, source, options, files, cache_dir, lambda folder: write_dataset(folder, once()), in_memory=once)
