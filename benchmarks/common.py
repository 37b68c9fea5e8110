"""Shared pieces of the benchmarks: the straightforward reference loop and measurements.

The reference is the assignment's training loop written the straightforward way: a
per-item Dataset through a DataLoader, a ``.item()`` host sync every step, the default
memory format and Adam's defaults. The benchmarks measure vaekit against it in the
same process, on the same data and seed.
"""

from __future__ import annotations

import os
import platform
import threading

import torch

import vaekit
from vaekit import SimpleVAE


class PerItemDataset(torch.utils.data.Dataset):
    """What a straightforward script hands to a DataLoader: one (image, label) per index."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def reference_batches(images, labels, batch_size: int, seed: int):
    """Endless shuffled batches from a DataLoader over a per-item Dataset."""
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(PerItemDataset(images, labels), batch_size=batch_size, shuffle=True, generator=gen)
    while True:
        yield from loader


def reference_step(model: SimpleVAE, opt: torch.optim.Optimizer, x: torch.Tensor, n_samples: int) -> float:
    """One straightforward step: loss, backward, step, and a host sync for the running ELBO."""
    elbo = model.elbo(x, n_samples)
    opt.zero_grad()
    (-elbo).backward()
    opt.step()
    return elbo.item()


class PeakRSS:
    """Peak resident memory (MiB) of this process while the context is open, sampled every 5 ms."""

    def __enter__(self):
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:  # not Linux: fall back to the lifetime peak
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}, vaekit {vaekit.__version__}"
