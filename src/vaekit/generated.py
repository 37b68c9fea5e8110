"""Generated images as 8-bit arrays: drawn from a sampler, decoded in batches, quantized, saved as ``.npy``.

One way to draw, shared by ``vaekit sample --out FILE.npy`` and ``vaekit eval --generate N``, so that
the same run, sampler, N and seed give the same bytes in both (and sample-quality figures can be
recomputed from the saved file by outside tools):

1. z [N, K] = ``sampler.sample_z(model, N, seed)``, all N codes in one draw (the seed fixes all of them,
   whatever the batch size);
2. decoded to mean images E[x|z] [N, C, H, W] on the model's device, ``DECODE_BATCH`` codes at a time;
3. quantized: ``round(255 * clamp(x, 0, 1))`` as uint8, the way ``vaekit.data.ImageData`` stores
   images given as floats.

Draw on the CPU (as ``vaekit sample`` does) to get the same numbers: the prior's codes come from the
model's device's generator, so another device draws other codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write
from .samplers import Sampler, decode_samples

__all__ = ["DECODE_BATCH", "to_uint8", "draw_uint8", "save_npy", "QUANTIZATION"]

#: codes decoded per batch
DECODE_BATCH = 500
#: how the saved arrays are made from the decoder's mean images, in words (printed and recorded)
QUANTIZATION = "uint8 [N, C, H, W] = round(255 * clamp(mean image E[x|z], 0, 1))"


def to_uint8(images: Tensor) -> Tensor:
    """Mean images [N, C, H, W] (floats; values outside [0, 1] are clamped) -> uint8 [N, C, H, W] = round(255 x)."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor [N, C, H, W], got {type(images).__name__} {getattr(images, 'dtype', '')}")
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def draw_uint8(model: Any, sampler: Sampler, n: int, seed: int, batch_size: int = DECODE_BATCH) -> Tensor:
    """``n`` new images of ``model`` as uint8 [n, C, H, W] on the CPU: codes from the prepared ``sampler``
    (one seeded draw of all n), decoded ``batch_size`` at a time, quantized by :func:`to_uint8`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of images) must be an int >= 1, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    z = sampler.sample_z(model, n, seed)  # [n, K]
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(f"sampler {sampler.name} drew codes of shape {tuple(z.shape)}, expected [{n}, K]")
    batches = [to_uint8(decode_samples(model, z[start : start + batch_size])) for start in range(0, n, batch_size)]
    return torch.cat(batches)  # [n, C, H, W]


def save_npy(path: str | Path, images: Tensor) -> Path:
    """Write uint8 images [N, C, H, W] to ``path`` (a ``.npy`` file) atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"the array file must end in .npy, got {str(path)!r}")
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {getattr(images, 'dtype', type(images).__name__)} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    array = np.ascontiguousarray(images.numpy())
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
    return path
