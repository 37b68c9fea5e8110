"""Your own images: folders of image files and ``.npy`` / ``.npz`` arrays, imported once into a cache.

**Image folders** (``load_image_folder``).  Files are found recursively (symlinks
followed, hidden files and folders skipped) by their suffix, :data:`IMAGE_SUFFIXES`;
anything else is ignored.  Every file Pillow decodes is accepted; a GIF or TIFF gives its
first frame.

* Splits: if the folder holds ``train/`` and ``test/``, those are the splits.  Otherwise
  the images are split at random with a fixed seed (:data:`SPLIT_SEED`): ``round(F * N)``
  images (``DataConfig.test_fraction`` F, default 0.1) go to the test split.
* Labels: if a split folder holds only sub-folders (no image files of its own), each
  sub-folder is a class (the ImageFolder convention): class names are sorted and numbered
  from 0 -- except that when every class name is a number (``0``, ``1``, ... ``10``) the
  number is the label, so a folder missing some classes keeps its labels.
  ``info["class_labels"]`` maps each name to its label.  Otherwise there are no labels
  (``-1``, ``info["labelled"]`` False).
* Order: the images of a split are sorted by their path *inside their class folder*
  (path components compared as strings), then by class name.  Name files with
  zero-padded numbers (``00001.png``) to keep a numeric order:
  :func:`export_png` writes ``train/<label>/<index>.png`` so that a folder it wrote loads
  back in the original order.
* Conversions, in this order: 16-bit grey is scaled to 8 bits (``round(v * 255 / 65535)``;
  Pillow itself keeps the high byte of 16-bit RGB); palette images become RGB (L if the
  palette is all grey); transparency (alpha, or a palette's transparent colour) is
  composited on **black** (``c * a / 255``); CMYK, YCbCr, LAB, HSV become RGB; a JPEG's EXIF
  orientation is applied.  Then ``--channels 1`` converts RGB to grey with Pillow's ITU-R
  601-2 luma (``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``), ``--channels 3`` repeats
  grey into R, G and B.  Then ``--image-size S`` resizes the shorter side to S (Pillow's
  bicubic filter, antialiased when shrinking) and crops the centre SxS; an image already
  SxS is not resampled.  Without ``--channels``: 1 if every image is grey, else 3; without
  ``--image-size``: the images' size, which must then be the same for all.

**Array files** (``load_array_file``): a ``.npy`` array, or an ``.npz`` with the keys
``x_train`` + ``x_test`` (labels ``y_train`` + ``y_test`` optional), ``train`` + ``test``
(same labels), or ``images`` (labels ``labels`` optional; split like a folder without
``train/``/``test/``).  Layouts ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``
with C = 1 or 3; uint8 (0-255) or floats in [0, 1] (stored as ``round(x * 255)``).

**The cache.**  Each source is imported once into
``default_cache_dir()/imports/<key>/`` (key: a hash of the source's resolved path, its
kind and the options): ``train.npy`` / ``test.npy`` (uint8 ``[N, C, H, W]``),
``train-labels.npy`` / ``test-labels.npy`` (int64) and ``manifest.json`` (the files with
their sizes and mtimes, the options, the split, skipped files, the arrays' shapes and a
SHA-256 of their content).  A later load lists the source (names, sizes, mtimes; no
decoding) and reuses the cache if that listing and the options match the manifest and the
arrays have the recorded shapes; otherwise, or if the cache is unreadable, it imports
again.  Arrays are written first and the manifest last, each atomically; a lock file
makes concurrent loads (e.g. several training processes) import once.  The source is only
read, never written.  The arrays are memory-mapped (copy-on-write), not read into memory.

Images are decoded in parallel, one process per core (``concurrent.futures``, fork on
Linux), with a tqdm progress bar.  Bad input raises :class:`vaekit.data.DatasetError`
with one line naming the file and what to do.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import struct
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write
from .data import DatasetError, ImageData, default_cache_dir

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLIT_SEED",
    "load_image_folder",
    "load_array_file",
    "decode_image",
    "conform_uint8",
    "export_png",
    "cache_size",
]

#: File suffixes (lower-cased) that are read as images; other files are ignored.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm",
)
#: Seed of the random train/test split of data without one.
SPLIT_SEED = 0
_CACHE_FORMAT = 1  # bump to invalidate every imported cache
_PARALLEL_MIN = 256  # fewer images are decoded in this process: a pool costs more than it saves
_NPY_HEADER = 256  # bytes of our .npy headers, fixed so that the count can be written last
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class _BadImage(Exception):
    """An image file that cannot be used; the message says why."""


# ============================================================================ decoding


def _pil():
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
    except Exception:  # a malformed EXIF block is not worth rejecting the image
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
    Image = _pil()
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
    Image = _pil()
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
    Image = _pil()
    try:
        with Image.open(path) as img:
            img.load()  # decodes now: a truncated or corrupt file fails here (GIF/TIFF: the first frame)
            orientation = _orientation(img)
            img = _to_8bit(img)
    except _BadImage:
        raise
    except Exception as exc:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, zlib.error...)
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
    Image = _pil()
    try:
        with Image.open(path) as img:
            w, h = img.size
            if _orientation(img) in (5, 6, 7, 8):
                w, h = h, w
            return w, h, _is_grey(img)
    except Exception as exc:
        raise _BadImage(_why(exc)) from None


def _guarded(fn: Callable, path: str):
    """Run ``fn(path)`` in a worker: the result, or the _BadImage message (as a str) to report."""
    try:
        return fn(path)
    except _BadImage as exc:
        return str(exc)


# ============================================================================ parallel map


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _decode_chunk(job: tuple[list[str], int | None, int | None]) -> list[tuple[int, np.ndarray | str]]:
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


@contextlib.contextmanager
def _pool(n_items: int) -> Iterator[concurrent.futures.Executor | None]:
    """A process pool (one worker per core; fork where available) when ``n_items`` images make it pay, else None."""
    workers = _workers()
    if workers <= 1 or n_items < _PARALLEL_MIN:
        yield None
        return
    ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pmap(
    fn: Callable, jobs: Sequence, weights: Sequence[int], *, desc: str, progress: bool | None,
    pool: concurrent.futures.Executor | None = None,
) -> Iterator:
    """``map(fn, jobs)`` in order, over ``pool`` if given, with a tqdm bar counting ``weights``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(weights), desc=desc, unit="img", disable=None if progress is None else not progress, leave=False)
    try:
        if pool is None:
            for job, weight in zip(jobs, weights):
                yield fn(job)
                bar.update(weight)
            return
        # a sliding window of jobs in flight: decoded images wait for the writer, never the whole split
        window = 4 * _workers()
        pending: collections.deque = collections.deque()
        todo = iter(zip(jobs, weights))
        try:
            while True:
                while len(pending) < window:
                    job_weight = next(todo, None)
                    if job_weight is None:
                        break
                    with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads; workers only run Pillow
                        warnings.simplefilter("ignore", DeprecationWarning)
                        pending.append((pool.submit(fn, job_weight[0]), job_weight[1]))
                if not pending:
                    break
                future, weight = pending.popleft()
                yield future.result()
                bar.update(weight)
        finally:
            for future, _ in pending:
                future.cancel()
    finally:
        bar.close()


def _chunked(items: Sequence, n_items: int) -> list:
    """Split ``items`` into chunks: about 8 per worker, 16 to 512 items each."""
    per = max(16, min(512, math.ceil(n_items / (_workers() * 8))))
    return [items[i : i + per] for i in range(0, len(items), per)]


# ============================================================================ source listing


def _scan_tree(root: str) -> list[str]:
    """Paths (relative to ``root``, with "/") of the image files under it, recursively, following
    symlinks; a symlink loop is an error.  Strings, not pathlib: this runs on every load."""
    found: list[str] = []
    chains: dict[str, frozenset[str]] = {}
    skip = len(root) + 1

    def onerror(exc: OSError) -> None:
        raise DatasetError(
            f"{exc.filename}: cannot list the folder ({exc.strerror or exc}); make it readable or remove it"
        )

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        above = chains.get(os.path.dirname(dirpath), frozenset())
        if real in above:
            raise DatasetError(
                f"{dirpath}: symbolic link loop (it leads back to {real}, which contains it); remove the link "
                f"or give --dataset a folder without it"
            )
        chains[dirpath] = above | {real}
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        prefix = dirpath[skip:].replace(os.sep, "/") + "/" if len(dirpath) > len(root) else ""
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append(prefix + name)
    return found


def _split_entries(root: str, split: str) -> tuple[list[tuple[tuple[str, ...], str | None, str]], bool]:
    """The images under ``root/split`` ("" for root itself):
    ([(order key, class name or None, path relative to root)], has class folders)."""
    here = os.path.join(root, split) if split else root
    lead = f"{split}/" if split else ""
    try:
        with os.scandir(here) as it:
            children = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        own_images = [e for e in children if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
        folders = [e.name for e in children if e.is_dir()]
    except OSError as exc:
        raise DatasetError(f"{here}: cannot list the folder ({exc.strerror or exc}); make it readable") from None
    entries = []
    if own_images or not folders:  # no classes: order by the path below the split folder
        for rel in _scan_tree(here):
            entries.append((tuple(rel.split("/")), None, lead + rel))
        return entries, False
    for name in folders:
        for rel in _scan_tree(os.path.join(here, name)):
            entries.append((tuple(rel.split("/")) + ("", name), name, f"{lead}{name}/{rel}"))
    return entries, True


class _Listing:
    """What a source folder holds: per split, the files (in order, relative to the root) and their labels."""

    def __init__(self, root: pathlib.Path):
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder")
        subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        self.root = root
        base = os.path.normpath(str(root))
        if {"train", "test"} <= subdirs:
            self.given_split = True
            parts = {s: _split_entries(base, s) for s in ("train", "test")}
            if parts["train"][1] != parts["test"][1]:
                which = "train" if parts["train"][1] else "test"
                raise DatasetError(
                    f"{root}: {which}/ holds class folders but {'test' if which == 'train' else 'train'}/ does not; "
                    f"expected class folders in both (labels) or in neither (no labels)"
                )
        else:
            for lone in ("train", "test"):
                if lone in subdirs and {"train", "test"} - subdirs:
                    other = ({"train", "test"} - {lone}).pop()
                    raise DatasetError(
                        f"{root}: has {lone}/ but no {other}/; add {root / other}/ for a given split, or rename "
                        f"{lone}/ to have the images split at random (--test-fraction)"
                    )
            self.given_split = False
            parts = {"all": _split_entries(base, "")}
        self.labelled = next(iter(parts.values()))[1]
        names = sorted({c for entries, _ in parts.values() for _, c, _ in entries if c is not None})
        if names and all(n.isdecimal() and n.isascii() and str(int(n)) == n for n in names):
            names.sort(key=int)  # "0", "1", ... "10": the number is the label (a subset keeps its labels)
            index = {c: int(c) for c in names}
        else:
            index = {c: i for i, c in enumerate(names)}  # ImageFolder: the position among the sorted names
        self.classes = names if self.labelled else None
        self.class_labels = index if self.labelled else None
        self.files: dict[str, list[str]] = {}  # relative, with "/"
        self.labels: dict[str, list[int]] = {}
        for split, (entries, _) in parts.items():
            entries.sort(key=lambda e: e[0])
            self.files[split] = [rel for _, _, rel in entries]
            self.labels[split] = [index[c] if c is not None else -1 for _, c, _ in entries]
        self.base = base

    def path(self, rel: str) -> str:
        return os.path.join(self.base, rel)

    def stat(self) -> list[list]:
        """[relative path, size, mtime_ns] of every file, in order: what the cache is checked against."""
        out = []
        for split in self.files:
            for rel in self.files[split]:
                st = os.stat(os.path.join(self.base, rel))
                out.append([rel, st.st_size, st.st_mtime_ns])
        return out


def _seeded_split(n: int, fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of the train and test images of ``n``: round(fraction * n) test images, seeded."""
    n_test = math.floor(fraction * n + 0.5)
    if n_test == 0:
        raise DatasetError(
            f"{where}: {n} images with --test-fraction {fraction} leave the test split empty; "
            f"add images or raise --test-fraction (at least {1 / n if n else 1:.3g})"
        )
    if n_test >= n:
        raise DatasetError(
            f"{where}: {n} images with --test-fraction {fraction} leave no training images; lower --test-fraction"
        )
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# ============================================================================ the cache


def _npy_header(shape: Sequence[int]) -> bytes:
    """A .npy v1.0 header for a C-ordered uint8 array, always _NPY_HEADER bytes long."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % (tuple(int(s) for s in shape),)
    body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
    if len(body) != _NPY_HEADER - 10:
        raise DatasetError(f"array shape {tuple(shape)} is too large for the cache's .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _write_uint8_npy(path: pathlib.Path, chw: tuple[int, int, int], chunks: Iterable[np.ndarray], digest) -> int:
    """Stream [k, C, H, W] uint8 chunks into ``path`` atomically; return the count, feed ``digest``."""
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


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _cache_root(cache_dir: str | os.PathLike | None) -> pathlib.Path:
    return (pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "imports"


def _cache_folder(cache_dir, kind: str, source: pathlib.Path, options: dict) -> pathlib.Path:
    key = json.dumps({"format": _CACHE_FORMAT, "kind": kind, "source": str(source), "options": options}, sort_keys=True)
    name = f"{source.name[:40] or 'root'}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return _cache_root(cache_dir) / name


@contextlib.contextmanager
def _locked(folder: pathlib.Path):
    """Hold an exclusive lock on ``folder/.lock`` (one import at a time); a no-op without fcntl."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".lock", "a+b")
    except OSError as exc:
        raise DatasetError(
            f"cannot write the image cache in {folder} ({exc.strerror or exc}); set VAEKIT_CACHE to a writable folder"
        ) from None
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


def cache_size(folder: str | os.PathLike) -> int:
    """Bytes of the files in a cache folder (as ``info["cache"]`` names it)."""
    try:
        return sum(p.stat().st_size for p in pathlib.Path(folder).iterdir() if p.is_file())
    except OSError:
        return 0


def _image_data(name: str, manifest: dict, tensors: dict, folder: pathlib.Path, status: str, seconds: float) -> ImageData:
    info = dict(manifest["info"])
    info.update(
        cache=str(folder), cache_status=status, cache_bytes=cache_size(folder), import_seconds=round(seconds, 3),
        train=int(tensors["train_uint8"].shape[0]), test=int(tensors["test_uint8"].shape[0]),
    )
    return ImageData(name=name, info=info, **tensors)


def _cached_load(
    name: str, kind: str, source: pathlib.Path, options: dict, listing: list, cache_dir, build: Callable[[pathlib.Path], dict]
) -> ImageData:
    """Reuse the cache entry of (source, options) if it matches ``listing``, else ``build`` it and load it."""
    folder = _cache_folder(cache_dir, kind, source, options)
    expect = {"format": _CACHE_FORMAT, "kind": kind, "source": str(source), "options": options, "files": listing}
    with _locked(folder):
        hit = _open_cached(folder, expect)
        if hit is not None:
            return _image_data(name, *hit, folder, "reused", 0.0)
        status = "imported" if not (folder / "manifest.json").exists() else "re-imported (files, options or cache changed)"
        t0 = time.perf_counter()
        try:
            # the old manifest goes first: if this import fails half-way, no manifest vouches for the
            # arrays it replaced (even if the files come back to what the old manifest listed)
            (folder / "manifest.json").unlink(missing_ok=True)
            manifest = {**expect, **build(folder)}
            atomic_write(folder / "manifest.json", lambda fh: fh.write(json.dumps(manifest, indent=1).encode()))
        except OSError as exc:
            raise DatasetError(
                f"cannot write the image cache in {folder} ({exc.strerror or exc}); set VAEKIT_CACHE to a writable folder"
            ) from None
        hit = _open_cached(folder, expect)
        if hit is None:
            raise DatasetError(f"{folder}: the cache just written cannot be read back; check the disk and VAEKIT_CACHE")
        return _image_data(name, *hit, folder, status, time.perf_counter() - t0)


def _options(config) -> dict:
    return {
        "image_size": config.image_size,
        "channels": config.channels,
        "test_fraction": config.test_fraction,
        "skip_bad_images": config.skip_bad_images,
        "split_seed": SPLIT_SEED,
    }


# ============================================================================ image folders


def load_image_folder(
    path: str | os.PathLike, *, config=None, cache_dir: str | os.PathLike | None = None, progress: bool | None = None
) -> ImageData:
    """Load a folder of image files (see the module docstring), importing it into the cache first if needed.

    ``config`` is a :class:`vaekit.config.DataConfig` (default: its defaults).  The result's
    ``info`` holds the split rule, classes, skipped files and the cache folder.
    """
    from .config import DataConfig

    config = config if config is not None else DataConfig()
    root = pathlib.Path(path)
    listing = _Listing(root)
    n_files = sum(len(f) for f in listing.files.values())
    if n_files == 0:
        try:
            empty = not any(root.iterdir())
        except OSError:
            empty = False
        what = "is empty" if empty else f"holds no image files ({', '.join(IMAGE_SUFFIXES[:8])}, ...; searched recursively)"
        raise DatasetError(
            f"{root}: {what}; expected image files, class folders of them, or train/ and test/ folders"
        )
    options = _options(config)
    return _cached_load(
        str(path), "image-folder", root.resolve(), options, listing.stat(), cache_dir,
        functools.partial(_import_folder, listing, config, progress),
    )


def _bad(rel: str, why: str, root: pathlib.Path, skipped: list, config) -> None:
    if not config.skip_bad_images:
        raise DatasetError(f"{root / rel}: {why}; fix or remove the file, or pass --skip-bad-images to skip such files")
    skipped.append(f"{rel}: {why}")


class _MoreChannels(Exception):
    """A colour image came after grey ones while the channels come from the data."""


class _OtherSize(Exception):
    """Images of different sizes while the size comes from the data."""


def _sizes_error(root: pathlib.Path, rels: list[str], progress: bool | None) -> DatasetError:
    sizes: dict[tuple[int, int], list[str]] = {}
    jobs = _chunked([str(root / r) for r in rels], len(rels))
    with _pool(len(rels)) as pool:
        probes = list(_pmap(_probe_chunk, jobs, [len(j) for j in jobs], desc="reading headers", progress=progress, pool=pool))
    for rel, probe in zip(rels, itertools.chain.from_iterable(probes)):
        if not isinstance(probe, str):
            sizes.setdefault(probe[:2], []).append(rel)
    found = ", ".join(
        f"{w}x{h} ({len(names)} file{'s' * (len(names) > 1)}, e.g. {names[0]})"
        for (w, h), names in sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:8]
    )
    return DatasetError(
        f"{root}: images of {len(sizes)} different sizes (width x height): {found}; pass --image-size S to "
        f"resize them all (shorter side to S, centre crop SxS)"
    )


def _probe_chunk(paths: list[str]) -> list:
    return [_guarded(_probe, p) for p in paths]


def _decode_splits(listing, splits, size, channels, config, progress, folder, n_total, pool):
    """Decode both splits into the cache folder's .npy files: (shapes, files, digest, skipped, [C, H, W])."""
    root = listing.root
    skipped: list[str] = []
    shapes, files_out = {}, {}
    digest = hashlib.sha256()
    chw: tuple[int, int, int] | None = None  # fixed by the first good image
    for split in ("train", "test"):
        paths, labels = splits[split]
        kept: list[int] = []

        def blocks(paths=paths, kept=kept, split=split) -> Iterator[np.ndarray]:
            nonlocal chw
            jobs = [(chunk, size, channels) for chunk in _chunked([listing.path(r) for r in paths], n_total)]
            offsets = np.cumsum([0] + [len(j[0]) for j in jobs])
            results = _pmap(_decode_chunk, jobs, [len(j[0]) for j in jobs], desc=f"importing {split}", progress=progress, pool=pool)
            with contextlib.closing(results):
                for offset, items in zip(offsets, results):
                    for pos, item in items:
                        if isinstance(item, str):
                            _bad(paths[offset + pos], item, root, skipped, config)
                            continue
                        if chw is None:
                            chw = tuple(item.shape[1:])
                        if channels is None and item.shape[1] != chw[0]:
                            if item.shape[1] == 3:
                                raise _MoreChannels
                            item = np.repeat(item, 3, axis=1)  # grey among colour: R = G = B, as Pillow's convert("RGB")
                        if item.shape[2:] != chw[1:]:
                            raise _OtherSize
                        kept.extend(range(offset + pos, offset + pos + len(item)))
                        yield item

        stream = blocks()
        first = next(stream, None)
        if first is None:
            raise DatasetError(
                f"{root}: the {split} split would be empty (all its images were skipped as bad); add images"
            )
        n = _write_uint8_npy(folder / f"{split}.npy", chw, itertools.chain([first], stream), digest)
        lab = np.asarray([labels[i] for i in kept], dtype=np.int64)
        digest.update(lab.tobytes())
        _save_npy(folder / f"{split}-labels.npy", lab)
        shapes[split] = [n, *chw]
        files_out[split] = [paths[i] for i in kept]
    return shapes, files_out, digest, skipped, chw


def _import_folder(listing: _Listing, config, progress: bool | None, folder: pathlib.Path) -> dict:
    root = listing.root
    if listing.given_split:
        splits = {s: (listing.files[s], listing.labels[s]) for s in ("train", "test")}
        for s, (files, _) in splits.items():
            if not files:
                raise DatasetError(f"{root / s}: holds no image files, so the {s} split would be empty; add images to it")
    else:
        files, labels = listing.files["all"], listing.labels["all"]
        train_idx, test_idx = _seeded_split(len(files), config.test_fraction, str(root))
        splits = {
            "train": ([files[i] for i in train_idx], [labels[i] for i in train_idx]),
            "test": ([files[i] for i in test_idx], [labels[i] for i in test_idx]),
        }
    size, channels = config.image_size, config.channels
    n_total = sum(len(f) for f, _ in splits.values())
    error = False
    with _pool(n_total) as pool:
        while True:
            try:
                written = _decode_splits(listing, splits, size, channels, config, progress, folder, n_total, pool)
                break
            except _MoreChannels:  # a colour image after grey ones, channels from the data: 3 for all, from the start
                channels = 3
            except _OtherSize:  # sizes differ and none was given: read every header to list them
                error = True
                break
    if error:
        raise _sizes_error(root, [p for f, _ in splits.values() for p in f], progress)
    shapes, files_out, digest, skipped, chw = written
    info = {
        "source": "image-folder",
        "path": str(root),
        "split": "given (train/ and test/ folders)" if listing.given_split else "seeded",
        "test_fraction": None if listing.given_split else config.test_fraction,
        "split_seed": None if listing.given_split else SPLIT_SEED,
        "labelled": listing.labelled,
        "classes": listing.classes,
        "class_labels": listing.class_labels,
        "image_size": [chw[1], chw[2]],
        "channels": chw[0],
        "image_size_rule": "given" if config.image_size is not None else "from the data",
        "channels_rule": "given" if config.channels is not None else "from the data",
        "skipped": len(skipped),
        "skipped_files": skipped,
    }
    return {"shapes": shapes, "split_files": files_out, "content_sha256": digest.hexdigest(), "info": info}


# ============================================================================ array files


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
        Image = _pil()
        out = np.empty((len(arr), arr.shape[1], image_size, image_size), dtype=np.uint8)
        for i, img in enumerate(arr):
            pil = Image.fromarray(img[0], "L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0), "RGB")
            fitted = np.asarray(_fit(pil, image_size))
            out[i] = fitted[None] if fitted.ndim == 2 else fitted.transpose(2, 0, 1)
        arr = out
    if arr is original:  # nothing to convert
        return u8
    return torch.from_numpy(np.ascontiguousarray(arr)) if is_torch else arr


def load_array_file(
    path: str | os.PathLike, *, config=None, cache_dir: str | os.PathLike | None = None, progress: bool | None = None
) -> ImageData:
    """Load a ``.npy`` or ``.npz`` file of images (see the module docstring), through the cache."""
    from .config import DataConfig

    config = config if config is not None else DataConfig()
    source = pathlib.Path(path)
    try:
        st = source.stat()
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    kind = source.suffix.lower()[1:]
    listing = [[source.name, st.st_size, st.st_mtime_ns]]
    return _cached_load(
        str(path), kind, source.resolve(), _options(config), listing, cache_dir,
        functools.partial(_import_arrays, source, kind, config),
    )


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
        train_idx, test_idx = _seeded_split(len(nchw), config.test_fraction, str(source))
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
        n = _write_uint8_npy(folder / f"{split}.npy", first.shape[1:], _u8_chunks(nchw, config.image_size, config.channels), digest)
        lab = np.full(n, -1, dtype=np.int64) if lab is None else lab
        digest.update(lab.tobytes())
        _save_npy(folder / f"{split}-labels.npy", lab)
        shapes[split] = [n, *first.shape[1:]]
    chw = shapes["train"][1:]
    if shapes["test"][1:] != chw:
        raise DatasetError(
            f"{source}: train images are {chw[2]}x{chw[1]} with {chw[0]} channels but test images "
            f"{shapes['test'][3]}x{shapes['test'][2]} with {shapes['test'][1]}; pass --image-size S and --channels C"
        )
    given = "all" not in images
    info = {
        "source": kind,
        "path": str(source),
        "split": "given (keys)" if given else "seeded",
        "test_fraction": None if given else config.test_fraction,
        "split_seed": None if given else SPLIT_SEED,
        "labelled": all(labels[s] is not None for s in labels),
        "classes": None,
        "image_size": [chw[1], chw[2]],
        "channels": chw[0],
        "image_size_rule": "given" if config.image_size is not None else "from the data",
        "channels_rule": "given" if config.channels is not None else "from the data",
        "skipped": 0,
        "skipped_files": [],
    }
    return {"shapes": shapes, "content_sha256": digest.hexdigest(), "info": info}


class _Rows:
    """Rows ``index`` of a (memory-mapped) array, sliced lazily so that the whole is never copied."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sl: slice) -> np.ndarray:
        return self.array[self.index[sl]]


# ============================================================================ export


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
    from .data import load_dataset

    Image = _pil()
    if not isinstance(data, ImageData):
        data = load_dataset(data)
    folder = pathlib.Path(folder)
    for split, limit in (("train", limit_train), ("test", limit_test)):
        u8 = getattr(data, f"{split}_uint8")[:limit]
        labels = getattr(data, f"{split}_labels")[:limit]
        width = max(5, len(str(len(u8) - 1)))
        for i, (img, label) in enumerate(zip(u8.numpy(), labels.tolist())):
            where = folder / split / str(label) if label >= 0 else folder / split
            where.mkdir(parents=True, exist_ok=True)
            pil = Image.fromarray(img[0], "L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0), "RGB")
            pil.save(where / f"{i:0{width}d}.png")
    return folder
