"""Tests for vaekit.data.stream: data larger than memory, rows read from a .npy file on demand, with bounded resident memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vaekit import TrainConfig, fit
from vaekit.config import ModelConfig
from vaekit.data import NpyRows
from vaekit.model import build_model


def test_rows_read_on_demand_equal_the_array(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(40, 3, 5, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    rows = NpyRows(tmp_path / "a.npy")
    assert len(rows) == 40 and rows.shape == (40, 3, 5, 4) and rows.dtype == torch.uint8
    assert torch.equal(rows[7:19], torch.from_numpy(a[7:19])) and torch.equal(rows[3], torch.from_numpy(a[3]))
    assert torch.equal(rows[0:40:7], torch.from_numpy(a[0:40:7]))
    idx = torch.tensor([39, 0, 5, 5])
    assert torch.equal(rows.index_select(0, idx), torch.from_numpy(a[idx.numpy()]))
    with pytest.raises(IndexError, match="row 40 is out of range for 40 rows"):
        rows.index_select(0, torch.tensor([40]))
    np.save(tmp_path / "f.npy", a.astype(np.float32))
    with pytest.raises(ValueError, match=r"f.npy must hold a C-ordered uint8 array \[N, \.\.\.\], got float32"):
        NpyRows(tmp_path / "f.npy")


def test_training_from_disk_is_the_training_from_memory(tmp_path):
    """The same batches, the same steps: streamed and resident training end with equal weights."""
    a = np.random.default_rng(1).integers(0, 256, size=(64, 1, 12, 12), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=3, binarize="dynamic")
    weights = []
    for images in (torch.from_numpy(a), NpyRows(tmp_path / "a.npy")):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="conv", num_filters=2, depth=2, likelihood="bernoulli"), (1, 12, 12))
        fit(model, images, cfg, progress=False)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


PEAK = r"""
import json, resource, sys, torch
from vaekit import TrainConfig, fit
from vaekit.config import ModelConfig
from vaekit.data import NpyRows
from vaekit.model import build_model
rows = NpyRows(sys.argv[1])
model = build_model(ModelConfig(arch="mlp", hidden="4"), tuple(rows.shape[1:]))  # cheap: the reads dominate
fit(model, rows, TrainConfig(epochs=1, batch_size=128, device="cpu"), progress=False)
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss_mib(path) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


@pytest.mark.slow
def test_a_full_epoch_over_a_large_file_keeps_resident_memory_bounded(tmp_path):
    """One epoch over 96 MiB of images (every row read once) raises the peak RSS by far less than the
    file: the README's bound is 2 batches of images, here 2 x 128 x 12 KiB = 3 MiB; we allow 24 MiB."""
    rng = np.random.default_rng(0)
    shape = (3, 64, 64)  # 12 KiB an image
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    np.save(small, rng.integers(0, 256, size=(512, *shape), dtype=np.uint8))  # 6 MiB
    big = np.lib.format.open_memmap(large, mode="w+", dtype=np.uint8, shape=(8192, *shape))  # 96 MiB
    for start in range(0, len(big), 2048):
        big[start : start + 2048] = rng.integers(0, 256, size=(2048, *shape), dtype=np.uint8)
    big.flush()
    del big
    baseline, peak = peak_rss_mib(small), peak_rss_mib(large)
    assert peak - baseline < 24, (baseline, peak)
