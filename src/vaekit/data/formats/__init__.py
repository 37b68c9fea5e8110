"""Dataset formats: one file each in this package, found by name in :data:`FORMATS`.

A format is a :class:`DatasetFormat` registered with ``@FORMATS.register``: it says whether it
reads a source (``detect``: a name such as ``"mnist"``, or a path) and loads it into an
:class:`ImageData` (``load``). :func:`detect_format` asks the formats in order of ``priority``
(lower first); :func:`load_dataset` is detect, then load. Adding a format is adding one file
here (or loading one at run time with ``vaekit.registry.load_plugin``).

Built in: ``mnist`` and ``fashion-mnist`` (named sets, cached), ``npy`` and ``npz`` (array
files), ``idx`` (a folder with the four IDX files, read directly) and ``image-folder`` (any
other folder: image files, imported into the cache).
"""

from __future__ import annotations

import os
import pathlib

from ...registry import Part, Registry
from ..config import DataConfig
from ..errors import DatasetError
from ..images import ImageData

__all__ = ["DatasetFormat", "FORMATS", "detect_format", "load_dataset", "accepted"]


class DatasetFormat(Part):
    """A way to read a dataset: how to recognise its source, and how to load it."""

    #: lower is tried first by :func:`detect_format`
    priority: int = 100
    #: what this format reads, for the messages that list what is accepted ("a .npz file")
    accepts: str = ""

    @classmethod
    def detect(cls, source: str | os.PathLike) -> bool:
        """Whether this format reads ``source`` (a name or a path). Must not raise for sources it does not read."""
        raise NotImplementedError

    def load(
        self, source: str | os.PathLike, *, config: DataConfig, cache_dir: str | os.PathLike | None = None,
        progress: bool | None = None,
    ) -> ImageData:
        """The dataset at ``source``: uint8 images [N, C, H, W], labels [N] and a DatasetInfo.

        ``config`` sets the image size, channels, test fraction and bad-file handling; ``cache_dir``
        is the cache's folder (None: ``default_cache_dir()``); ``progress`` shows a progress bar
        while images are imported (None: when stderr is a terminal).
        """
        raise NotImplementedError


FORMATS: Registry[type[DatasetFormat]] = Registry("dataset format", DatasetFormat, package="vaekit.data.formats")


def _by_priority() -> list[type[DatasetFormat]]:
    return sorted((part for _, part in FORMATS.items()), key=lambda part: part.priority)


def accepted() -> str:
    """What the registered formats read, in the order they are tried: for messages."""
    return ", ".join(part.accepts or f"a {part.name} dataset" for part in _by_priority())


def detect_format(source: str | os.PathLike) -> str:
    """The name of the first format (lowest ``priority``) that reads ``source``; DatasetError if none does."""
    for part in _by_priority():
        if part.detect(source):
            return part.name
    path = pathlib.Path(source)
    if path.is_file():
        what = f"dataset {str(path)!r} is a file of an unknown kind"
    elif path.exists():
        what = f"dataset {str(path)!r} is of an unknown kind"
    else:
        what = f"unknown dataset {str(path)!r}: not an existing folder or file"
    raise DatasetError(f"{what}; expected one of: {accepted()}")


def load_dataset(
    name: str | os.PathLike = "mnist",
    cache_dir: str | os.PathLike | None = None,
    config: DataConfig | None = None,
    *,
    progress: bool | None = None,
) -> ImageData:
    """Load a dataset as uint8 tensors (and float32 views in ``[0, 1]``, on first access).

    ``name`` is ``"mnist"`` (the copy shipped with vaekit, MD5-verified), ``"fashion-mnist"``
    (Debian's ``dataset-fashion-mnist``), or a path, whose format :func:`detect_format` finds
    among :data:`FORMATS`: a folder holding the four IDX files ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each
    raw or ``.gz``), a ``.npy`` / ``.npz`` file, or a folder of image files. The names take
    precedence over folders of the same name; write ``./mnist`` for such a folder.

    ``config`` (a :class:`DataConfig`) sets the image size, channels, test fraction and whether
    bad image files are skipped; ``progress`` shows a progress bar while images are imported
    (None: when stderr is a terminal).

    Every source but an IDX folder is imported once into the cache in ``cache_dir`` (default
    :func:`vaekit.data.default_cache_dir`) and memory-mapped from there; a changed file or other
    options import again. MNIST's checksums are verified when its entry is made. A cache that
    cannot be written only costs speed for the named sets (a ``RuntimeWarning`` says so).
    """
    config = config if config is not None else DataConfig()
    return FORMATS[detect_format(name)]().load(name, config=config, cache_dir=cache_dir, progress=progress)
