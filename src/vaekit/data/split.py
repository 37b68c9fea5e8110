"""The seeded train/test split of data that comes without one."""

from __future__ import annotations

import math

import numpy as np

from .errors import DatasetError

__all__ = ["SPLIT_SEED", "seeded_split"]

#: Seed of the random train/test split of data without one.
SPLIT_SEED = 0


def seeded_split(n: int, fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
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
