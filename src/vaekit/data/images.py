"""``ImageData``, the container every dataset comes in, and the operations on its pixels.

Every dataset is uint8 images ``[N, C, H, W]`` (memory-mapped where cached) with float32 views in
``[0, 1]`` computed on first access (:func:`to_float`), labels, and a :class:`DatasetInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field

import torch

from .errors import DatasetError
from .info import DatasetInfo

__all__ = ["ImageData", "to_float", "binarize", "BINARIZE_SEED", "check_min_images"]


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
    (``info.labelled`` is False).  ``info`` (a :class:`DatasetInfo`; a dict is converted)
    describes where the data came from: source kind, path, split rule, skipped files,
    classes, image size, channels, cache.

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
    info: DatasetInfo = field(default_factory=DatasetInfo)
    train_images: InitVar[torch.Tensor | None] = None  # floats instead of bytes (see above)
    test_images: InitVar[torch.Tensor | None] = None

    def __post_init__(self, train_images: torch.Tensor | None, test_images: torch.Tensor | None) -> None:
        object.__setattr__(self, "_floats", {})
        if not isinstance(self.info, DatasetInfo):
            if self.info is not None and not isinstance(self.info, Mapping):
                raise DatasetError(f"ImageData info must be a DatasetInfo or a dict, got {type(self.info).__name__}")
            object.__setattr__(self, "info", DatasetInfo.from_dict(self.info))
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
