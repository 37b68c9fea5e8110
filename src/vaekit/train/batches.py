"""The training batches: the images on the device (or streamed from disk), each epoch's order from
(seed, epoch) alone, binarization, and this process's share of each global batch."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import Tensor

from ..data import NpyRows, binarize, to_float
from ..distributed import BatchShard

__all__ = ["as_image_tensor", "BatchSource", "ORDER_SEED_STRIDE"]

#: epoch e of a run with seed s draws its order from torch.Generator().manual_seed(s * ORDER_SEED_STRIDE + e)
ORDER_SEED_STRIDE = 100_003


def as_image_tensor(dataset: Any, name: str = "dataset") -> Tensor:
    """Images as one tensor [N, C, H, W] (floats in [0, 1] or uint8) from a tensor or any Dataset of (image, label)."""
    if isinstance(dataset, Tensor):
        images = dataset
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        images = dataset.tensors[0]
    else:
        try:
            n = len(dataset)
            images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(n)])  # [N, C, H, W]
        except Exception as e:
            raise TypeError(
                f"{name} must be an image tensor [N, 1, H, W] or a Dataset yielding (image [1, H, W], label); "
                f"reading it failed: {e}"
            ) from e
    if images.ndim != 4:
        raise ValueError(f"{name} must hold images of shape [N, 1, H, W], got shape {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not images.is_floating_point() and images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must hold floating-point images in [0, 1] or uint8 pixels in 0..255, got dtype {images.dtype}"
        )
    return images


class BatchSource:
    """Global batches of ``batch_size x world`` images, ``steps_per_epoch`` of them per epoch (the last may be short).

    ``images``: floats in [0, 1] or uint8 (kept uint8 on the device, a quarter of the memory, and made
    float a batch at a time), or a ``data.NpyRows`` larger than memory (read a batch at a time).
    ``binarize``: "static" draws the whole set once (``data.BINARIZE_SEED``), "dynamic" a fresh
    Bernoulli draw of every batch from the global RNG, drawn for the whole global batch.
    ``labels`` [N]: the images' labels, given for a model conditioned on them (``take_labels``).
    """

    def __init__(
        self, images: Any, batch_size: int, *, seed: int, binarize_mode: str, device: torch.device, world: int = 1,
        labels: Tensor | None = None,
    ):
        self.seed, self.binarize, self.device = seed, binarize_mode, device
        self.streamed = isinstance(images, NpyRows)
        if self.streamed:
            if binarize_mode == "static":
                raise ValueError("binarize='static' draws the whole training set at once and needs it in memory; use 'dynamic'")
        else:
            images = as_image_tensor(images, "images")
            if images.is_floating_point():
                images = images.to(torch.float32)
            images = images.to(device)
        if binarize_mode == "static":
            images = binarize(to_float(images))  # one fixed draw (data.BINARIZE_SEED)
        self.images, self.n_images = images, images.shape[0]
        self.batch_size = batch_size * world  # the global batch
        if self.batch_size > self.n_images:
            per_rank = f" (global batch {self.batch_size} = batch_size x {world} processes)" if world > 1 else ""
            raise ValueError(f"batch_size={batch_size}{per_rank} is larger than the {self.n_images} training images")
        self.steps_per_epoch = math.ceil(self.n_images / self.batch_size)
        # the images' labels [N] on the device, for a model conditioned on them (``take_labels``); None: not needed
        if labels is not None and (not isinstance(labels, Tensor) or labels.shape != (self.n_images,)):
            raise ValueError(f"labels must be a tensor [N={self.n_images}] (one per image), got {getattr(labels, 'shape', type(labels).__name__)}")
        self.labels = None if labels is None else labels.to(device=device, dtype=torch.long)

    def order(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order of the images [N]: it depends only on (seed, epoch)."""
        gen = torch.Generator().manual_seed(self.seed * ORDER_SEED_STRIDE + epoch)
        return torch.randperm(self.n_images, generator=gen).to(self.device)  # [N]

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Tensor]]:
        """(i, the indices of global batch i [B_global]) for batches ``start``.. of epoch ``epoch``."""
        perm = self.order(epoch)  # [N]
        bs = self.batch_size
        for i in range(start, self.steps_per_epoch):
            yield i, perm[i * bs : (i + 1) * bs]

    def take(self, idx: Tensor, shard: BatchShard) -> Tensor:
        """This process's images of the global batch ``idx``, float32 in [0, 1] on the device."""
        if self.binarize == "dynamic":  # a fresh binary image each time, drawn for the whole global batch
            return shard.draw(lambda b: torch.bernoulli(self.rows(idx)))
        return self.rows(shard.take(idx))

    def take_labels(self, idx: Tensor, shard: BatchShard) -> Tensor | None:
        """This process's labels of the global batch ``idx`` (the same slice as ``take``'s images), or None without labels."""
        return None if self.labels is None else self.labels.index_select(0, shard.take(idx))

    def rows(self, idx: Tensor) -> Tensor:
        """Images ``idx`` as float32 in [0, 1] on the device (read from disk when streamed)."""
        if self.streamed:
            return to_float(self.images.index_select(0, idx.cpu()).to(self.device))
        return to_float(self.images.index_select(0, idx))
