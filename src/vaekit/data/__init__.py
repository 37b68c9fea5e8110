"""Image datasets for vaekit: MNIST (shipped), Fashion-MNIST, IDX folders, image folders, npy/npz files.

Every dataset comes as an :class:`ImageData` holding uint8 images ``[N, C, H, W]`` (memory-mapped
where cached), float32 views in ``[0, 1]`` computed on first access, labels ``[N]``, and a
:class:`DatasetInfo` saying where it came from. :func:`load_dataset` finds the source's format
among :data:`FORMATS` (:func:`detect_format`) and loads it; every problem with the data raises
:class:`DatasetError`, whose message names the file or argument, what was seen and what was expected.

The modules, each one concern, importing only downward::

    errors.py      DatasetError
    info.py        DatasetInfo, written into config.json
    images.py      ImageData, to_float, binarize, check_min_images
    config.py      DataConfig (image size, channels, test fraction, bad files)
    decode.py      one image file -> uint8 [C, H, W]; the conversion rules (conform_uint8)
    parallel.py    a process pool and an ordered map with a progress bar
    split.py       the seeded train/test split
    idx.py         IDX files and the four files of an MNIST-style dataset
    cache.py       the one cache: import once, check the listing, memory-map
    stream.py      NpyRows: a .npy read a batch at a time (data larger than memory)
    formats/       one file per format (named.py, idx.py, arrays.py, image_folder.py) and
                   FORMATS, detect_format, load_dataset (formats/__init__.py)
    export.py      export_png
    download.py    download_mnist

Importing this package reads and writes no file.
"""

from __future__ import annotations

from .cache import cache_size, default_cache_dir
from .config import DataConfig
from .decode import conform_uint8, decode_image
from .download import download_mnist
from .errors import DatasetError
from .export import export_png
from .formats import FORMATS, DatasetFormat, detect_format, load_dataset
from .formats.image_folder import IMAGE_SUFFIXES
from .formats.named import FASHION_MNIST_DIR, mnist_files
from .idx import MNIST_MD5, read_idx
from .images import BINARIZE_SEED, ImageData, binarize, check_min_images, to_float
from .info import DatasetInfo
from .split import SPLIT_SEED
from .stream import NpyRows, resident_limit_bytes

__all__ = [
    "load_dataset", "ImageData", "DatasetError", "DatasetInfo", "DataConfig", "binarize", "BINARIZE_SEED", "to_float",
    "check_min_images", "export_png", "download_mnist", "read_idx", "mnist_files", "default_cache_dir",
    "FASHION_MNIST_DIR", "MNIST_MD5", "detect_format", "FORMATS", "DatasetFormat", "NpyRows", "resident_limit_bytes",
    "decode_image", "conform_uint8", "cache_size", "IMAGE_SUFFIXES", "SPLIT_SEED",
]

