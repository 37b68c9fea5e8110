"""Importing a folder of PNGs: vaekit's parallel import against a plain single-process Pillow loop.

Writes the first N MNIST training images (default all 60,000) as PNG files into a
temporary folder (``<label>/<index>.png``), then, in this process and on the same files:
(a) the reference, a plain loop that lists the files and decodes each with Pillow into one
uint8 array; (b) ``vaekit.load_dataset(folder)`` into an empty cache: listing,
parallel decoding (one process per core), the cache's .npy files and manifest. Both read
files in the page cache (they were just written). They alternate for ``--rounds`` rounds
(vaekit into a fresh cache each time) and each keeps its best time, since the machine may
be shared. Checks that both give the same images, then prints images/s of each and
``ratio=`` (vaekit / reference) last.

    python benchmarks/import_images.py [--n 60000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from vaekit import load_dataset
from vaekit.config import DataConfig
from vaekit.data import IMAGE_SUFFIXES
from vaekit.data.parallel import n_workers

from common import machine


def write_pngs(folder: pathlib.Path, n: int) -> None:
    mnist = load_dataset("mnist")
    for i, (img, label) in enumerate(zip(mnist.train_uint8[:n, 0].numpy(), mnist.train_labels[:n].tolist())):
        (folder / str(label)).mkdir(exist_ok=True)
        Image.fromarray(img, "L").save(folder / str(label) / f"{i:05d}.png")


def cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process, and of its finished children."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def reference(folder: pathlib.Path) -> np.ndarray:
    """The plain loop: every image file under ``folder``, sorted, decoded with Pillow."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = None
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"))
        if out is None:
            out = np.empty((len(paths), *arr.shape), dtype=np.uint8)
        out[i] = arr
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60_000, help="PNG files to write and import (default 60000)")
    p.add_argument("--rounds", type=int, default=2, help="timed runs of each, alternating; the best counts (default 2)")
    args = p.parse_args()
    print(machine(), f"; {n_workers()} worker processes", flush=True)
    with tempfile.TemporaryDirectory(prefix="vaekit-import-bench-") as tmp:
        folder, cache = pathlib.Path(tmp) / "png", pathlib.Path(tmp) / "cache"
        folder.mkdir()
        t0 = time.perf_counter()
        write_pngs(folder, args.n)
        size = sum(f.stat().st_size for f in folder.rglob("*.png"))
        print(f"wrote {args.n} PNGs ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s", flush=True)

        ref_times, vk_times = [], []
        for r in range(args.rounds):  # alternate, and keep each one's best: the machine may be shared
            c0, t0 = cpu(), time.perf_counter()
            ref = reference(folder)
            ref_times.append(time.perf_counter() - t0)
            ref_cpu = cpu()[0] - c0[0]
            c0, t0 = cpu(), time.perf_counter()
            data = load_dataset(folder, cache_dir=cache / str(r), config=DataConfig(test_fraction=0.1), progress=False)
            vk_times.append(time.perf_counter() - t0)
            c1 = cpu()
            print(
                f"round {r + 1}: reference {ref_times[-1]:.2f} s ({ref_cpu:.2f} s CPU), vaekit {vk_times[-1]:.2f} s "
                f"({c1[0] - c0[0]:.2f} s CPU here + {c1[1] - c0[1]:.2f} s in the workers; load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        both = torch.cat([data.train_uint8, data.test_uint8])[:, 0].numpy()
        assert len(both) == args.n and sorted(map(bytes, both)) == sorted(map(bytes, ref)), "different images"
        ref_s, vk_s = min(ref_times), min(vk_times)
        print(f"reference: {args.n / ref_s:8.0f} images/s  (best {ref_s:.2f} s, one process, Pillow)")
        print(f"vaekit:    {args.n / vk_s:8.0f} images/s  (best {vk_s:.2f} s, listing + parallel decode + cache write; "
              f"cache {data.info.cache_bytes / 2**20:.1f} MiB)", flush=True)

        t0 = time.perf_counter()
        again = load_dataset(folder, cache_dir=cache / "0", config=DataConfig(test_fraction=0.1), progress=False)
        assert again.info.cache_status == "reused"
        print(f"vaekit, second load (cache reused): {time.perf_counter() - t0:.2f} s")
    print(f"ratio={(args.n / vk_s) / (args.n / ref_s):.2f}")


if __name__ == "__main__":
    main()
