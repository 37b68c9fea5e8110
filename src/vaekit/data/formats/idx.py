"""The ``idx`` format: a folder holding the four IDX files of an MNIST-style dataset.

``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each raw or ``.gz`` (also spelled ``train-images.idx3-ubyte``).
Read directly every time: not cached, and not checksummed (there is nothing to check them against).
Images may be any height and width, the same for train and test; labels are returned as they are
stored (not checked against 0..9).
"""

from __future__ import annotations

import os
import pathlib

from ..config import DataConfig
from ..errors import DatasetError
from ..idx import IDX_FILES, find_idx_files, idx_dataset, read_idx_dataset
from ..images import ImageData
from . import FORMATS, DatasetFormat

__all__ = ["IdxFolder"]


@FORMATS.register
class IdxFolder(DatasetFormat):
    """A folder with the four IDX files of an MNIST-style dataset (read directly, not cached)."""

    name = "idx"
    priority = 30
    accepts = "a folder with the four IDX files (train-images-idx3-ubyte, ...; raw or .gz)"

    @classmethod
    def detect(cls, source: str | os.PathLike) -> bool:
        """A folder with any of the four files (with only some, loading it names the missing ones)."""
        path = pathlib.Path(source)
        return path.is_dir() and bool(find_idx_files(path)[0])

    def load(self, source, *, config: DataConfig, cache_dir=None, progress=None) -> ImageData:
        folder = pathlib.Path(source)
        files, missing = find_idx_files(folder)
        if missing:
            raise DatasetError(
                f"dataset folder {folder} lacks {', '.join(missing)}; expected the four "
                f"IDX files {', '.join(IDX_FILES.values())} (each optionally .gz)"
            )
        arrays = read_idx_dataset(files)
        return idx_dataset(str(folder), "idx", files, arrays, config)
