"""Training data larger than memory: the rows of a uint8 ``.npy`` file, read a batch at a time.

``NpyRows(path)`` looks like a uint8 tensor [N, C, H, W] to the trainer and the evaluation
(``len``, ``shape``, ``index_select``, indexing by int, slice or index tensor), but holds only the
file's header: every access reads just the rows it needs with ``os.pread``, into fresh memory that
is freed with the batch. Nothing is memory-mapped, so the process's resident memory for the data
stays at about one batch, however large the file (``benchmarks`` and ``tests/test_data_stream.py``
measure it). ``fit`` streams from it when the data does not fit (``resident_limit_bytes``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["NpyRows", "resident_limit_bytes"]


def resident_limit_bytes() -> int:
    """The largest dataset (bytes) vaekit keeps in memory: ``$VAEKIT_RESIDENT_LIMIT_MB``, else half of the
    memory available now (Linux), else 4 GiB. Larger datasets stream from disk."""
    env = os.environ.get("VAEKIT_RESIDENT_LIMIT_MB")
    if env:
        return int(float(env) * 2**20)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 * 2**30


class NpyRows:
    """The rows of a C-ordered uint8 ``.npy`` file, read on demand (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) < 2:
            raise ValueError(f"{self.path} must hold a C-ordered uint8 array [N, ...], got {dtype} {list(shape)}{' (Fortran order)' if fortran else ''}")
        self.shape = torch.Size(shape)
        self.row_bytes = int(np.prod(shape[1:]))
        self.dtype = torch.uint8
        self.device = torch.device("cpu")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return False

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        """Rows ``index`` [B] -> uint8 [B, C, H, W] (only ``dim=0``)."""
        if dim != 0:
            raise ValueError("NpyRows selects rows only (dim=0)")
        idx = index.detach().cpu().to(torch.int64).tolist()
        out = np.empty((len(idx), self.row_bytes), dtype=np.uint8)  # [B, C*H*W]
        for j, i in enumerate(idx):
            if not 0 <= i < len(self):
                raise IndexError(f"row {i} is out of range for {len(self)} rows of {self.path}")
            out[j] = np.frombuffer(os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes), dtype=np.uint8)
        return torch.from_numpy(out).reshape(len(idx), *self.shape[1:])

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, int):
            return self.index_select(0, torch.tensor([key]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:  # one read for a contiguous block
                n = max(0, stop - start)
                data = os.pread(self._fd, n * self.row_bytes, self.offset + start * self.row_bytes)
                return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(n, *self.shape[1:])
            return self.index_select(0, torch.arange(start, stop, step))
        return self.index_select(0, torch.as_tensor(key))

    def to(self, *args: Any, **kwargs: Any) -> "NpyRows":
        return self  # stays on disk; batches are moved to the device as they are read

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={list(self.shape)})"
