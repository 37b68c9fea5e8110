"""The named sets: ``"mnist"`` (shipped with vaekit, MD5-verified) and ``"fashion-mnist"`` (Debian's package).

Both are the four IDX files of :mod:`vaekit.data.idx`, read once into the cache (MNIST's
decompressed bytes checked against :data:`MNIST_MD5` then; later loads skip gunzip and MD5)
and memory-mapped from there. A name takes precedence over a folder of the same name.
"""

from __future__ import annotations

import os
import pathlib

from ..cache import load_cached_data
from ..config import DataConfig
from ..errors import DatasetError
from ..idx import IDX_FILES, MNIST_MD5, find_idx_files, idx_dataset, read_idx_dataset
from ..images import ImageData
from . import FORMATS, DatasetFormat

__all__ = ["FASHION_MNIST_DIR", "mnist_files", "Mnist", "FashionMnist"]

#: Where Debian's ``dataset-fashion-mnist`` package installs its files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def mnist_files() -> dict[str, pathlib.Path]:
    """The four MNIST files shipped with vaekit.

    Keys: ``"train_images"``, ``"train_labels"``, ``"test_images"``,
    ``"test_labels"``; values are paths of the ``.gz`` files (which are not
    checked for existence here).
    """
    folder = pathlib.Path(__file__).resolve().parents[2] / "assets" / "mnist"
    return {role: folder / f"{base}.gz" for role, base in IDX_FILES.items()}


class _NamedSet(DatasetFormat):
    """The base of the named sets: its four IDX files, their checksums if any, read through the cache."""

    priority = 10

    @classmethod
    def detect(cls, source: str | os.PathLike) -> bool:
        return isinstance(source, str) and source == cls.name

    @classmethod
    def files(cls) -> dict[str, pathlib.Path]:
        raise NotImplementedError

    @classmethod
    def checksums(cls) -> dict[str, str] | None:
        return None

    def load(self, source, *, config: DataConfig, cache_dir=None, progress=None) -> ImageData:
        files = self.files()
        checksums = self.checksums()
        listing = []
        for role, path in files.items():
            st = path.stat()
            listing.append([str(path.resolve()), st.st_size, st.st_mtime_ns, (checksums or {}).get(role)])
        options = {"image_size": config.image_size, "channels": config.channels}
        return load_cached_data(
            self.name, self.name, files["train_images"].resolve().parent, options, listing, cache_dir,
            lambda: self.read(files, checksums, config),
        )

    def read(self, files: dict[str, pathlib.Path], checksums: dict[str, str] | None, config: DataConfig) -> ImageData:
        """The dataset read from its files, verified and converted as ``config`` says (not cached)."""
        arrays = read_idx_dataset(files, checksums)
        return idx_dataset(self.name, self.name, files, arrays, config)


@FORMATS.register
class Mnist(_NamedSet):
    """MNIST, the copy shipped with vaekit (checked against MNIST_MD5 when it is cached)."""

    name = "mnist"
    accepts = "'mnist'"

    @classmethod
    def files(cls) -> dict[str, pathlib.Path]:
        files = mnist_files()
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise DatasetError(
                f"shipped MNIST files are missing: {', '.join(missing)}; expected them "
                f"inside the vaekit package (reinstall vaekit, or fetch a copy with "
                f"download_mnist() and load that folder)"
            )
        return files

    @classmethod
    def checksums(cls) -> dict[str, str]:
        out = {}
        for role, base in IDX_FILES.items():
            if f"{base}.gz" not in MNIST_MD5:
                raise DatasetError(f"MNIST_MD5 has no checksum for {base}.gz; expected one for each of the four files")
            out[role] = MNIST_MD5[f"{base}.gz"]
        return out


@FORMATS.register
class FashionMnist(_NamedSet):
    """Fashion-MNIST, from Debian's dataset-fashion-mnist package (FASHION_MNIST_DIR)."""

    name = "fashion-mnist"
    accepts = "'fashion-mnist'"

    @classmethod
    def files(cls) -> dict[str, pathlib.Path]:
        folder = pathlib.Path(FASHION_MNIST_DIR)
        found, missing = find_idx_files(folder) if folder.is_dir() else ({}, list(IDX_FILES.values()))
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
