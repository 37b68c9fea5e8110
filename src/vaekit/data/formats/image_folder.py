"""The ``image-folder`` format: a folder of image files, imported once into the cache.

Files are found recursively (symlinks followed, hidden files and folders skipped) by their
suffix, :data:`IMAGE_SUFFIXES`; anything else is ignored. Every file Pillow decodes is accepted
and converted as :mod:`vaekit.data.decode` says.

* Splits: if the folder holds ``train/`` and ``test/``, those are the splits.  Otherwise
  the images are split at random with a fixed seed (:data:`SPLIT_SEED`): ``round(F * N)``
  images (``DataConfig.test_fraction`` F, default 0.1) go to the test split.
* Labels: if a split folder holds only sub-folders (no image files of its own), each
  sub-folder is a class (the ImageFolder convention): class names are sorted and numbered
  from 0 -- except that when every class name is a number (``0``, ``1``, ... ``10``) the
  number is the label, so a folder missing some classes keeps its labels.
  ``info.class_labels`` maps each name to its label.  Otherwise there are no labels
  (``-1``, ``info.labelled`` False).
* Order: the images of a split are sorted by their path *inside their class folder*
  (path components compared as strings), then by class name.  Name files with
  zero-padded numbers (``00001.png``) to keep a numeric order:
  :func:`vaekit.data.export_png` writes ``train/<label>/<index>.png`` so that a folder it
  wrote loads back in the original order.
* Size and channels: without ``--channels``, 1 if every image is grey, else 3; without
  ``--image-size``, the images' size, which must then be the same for all.

The import (:mod:`vaekit.data.cache`) decodes the images in parallel, one process per core,
with a tqdm progress bar, straight into the cache's ``.npy`` files; a later load lists the
folder (names, sizes, mtimes; no decoding) and reuses them. The folder is only read, never
written. Bad input raises :class:`DatasetError` with one line naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import pathlib
from typing import Iterator

import numpy as np

from ..cache import import_options, load_cached, save_npy, write_uint8_npy
from ..config import DataConfig
from ..errors import DatasetError
from ..images import ImageData
from ..info import DatasetInfo
from ..parallel import decode_files, probe_files, process_pool
from ..split import SPLIT_SEED, seeded_split
from . import FORMATS, DatasetFormat

__all__ = ["IMAGE_SUFFIXES", "ImageFolder"]

#: File suffixes (lower-cased) that are read as images; other files are ignored.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm",
)


# ----------------------------------------------------------------------------- what the folder holds


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


# ----------------------------------------------------------------------------- the format


@FORMATS.register
class ImageFolder(DatasetFormat):
    """A folder of image files (PNG, JPEG, ...; class sub-folders give labels), imported once into the cache."""

    name = "image-folder"
    priority = 90
    accepts = "a folder of image files (" + ", ".join(IMAGE_SUFFIXES[:4]) + ", ...)"

    @classmethod
    def detect(cls, source: str | os.PathLike) -> bool:
        """Any folder (the formats of more particular folders come first)."""
        return pathlib.Path(source).is_dir()

    def load(self, source, *, config: DataConfig, cache_dir=None, progress=None) -> ImageData:
        root = pathlib.Path(source)
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
        return load_cached(
            str(root), self.name, root.resolve(), import_options(config), listing.stat(), cache_dir,
            functools.partial(_import_folder, listing, config, progress),
        )


# ----------------------------------------------------------------------------- the import


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
    for rel, probe in zip(rels, probe_files([str(root / r) for r in rels], progress)):
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
            decoded = decode_files(
                [listing.path(r) for r in paths], size, channels, n_total=n_total, desc=f"importing {split}",
                progress=progress, pool=pool,
            )
            with contextlib.closing(decoded):
                for pos, item in decoded:
                    if isinstance(item, str):
                        _bad(paths[pos], item, root, skipped, config)
                        continue
                    if chw is None:
                        chw = tuple(item.shape[1:])
                    if channels is None and item.shape[1] != chw[0]:
                        if item.shape[1] == 3:
                            raise _MoreChannels
                        item = np.repeat(item, 3, axis=1)  # grey among colour: R = G = B, as Pillow's convert("RGB")
                    if item.shape[2:] != chw[1:]:
                        raise _OtherSize
                    kept.extend(range(pos, pos + len(item)))
                    yield item

        stream = blocks()
        first = next(stream, None)
        if first is None:
            raise DatasetError(
                f"{root}: the {split} split would be empty (all its images were skipped as bad); add images"
            )
        n = write_uint8_npy(folder / f"{split}.npy", chw, itertools.chain([first], stream), digest)
        lab = np.asarray([labels[i] for i in kept], dtype=np.int64)
        digest.update(lab.tobytes())
        save_npy(folder / f"{split}-labels.npy", lab)
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
        train_idx, test_idx = seeded_split(len(files), config.test_fraction, str(root))
        splits = {
            "train": ([files[i] for i in train_idx], [labels[i] for i in train_idx]),
            "test": ([files[i] for i in test_idx], [labels[i] for i in test_idx]),
        }
    size, channels = config.image_size, config.channels
    n_total = sum(len(f) for f, _ in splits.values())
    error = False
    with process_pool(n_total) as pool:
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
    info = DatasetInfo(
        source="image-folder", path=str(root), labelled=listing.labelled, classes=listing.classes,
        class_labels=listing.class_labels, skipped=len(skipped), skipped_files=skipped,
    )
    if listing.given_split:
        info.split = "given (train/ and test/ folders)"
    else:
        info.set_seeded_split(config, SPLIT_SEED)
    info.set_shape(config, chw)
    return {"shapes": shapes, "split_files": files_out, "content_sha256": digest.hexdigest(), "info": info.to_dict()}
