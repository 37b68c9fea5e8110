import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import train_args, vaekit, write_idx


def pytest_configure(config):
    # never touch the user's cache: the verified-MNIST cache of this test session lives in a temp folder
    if "VAEKIT_CACHE" not in os.environ:
        os.environ["VAEKIT_CACHE"] = tempfile.mkdtemp(prefix="vaekit-test-cache-")


@pytest.fixture(scope="session")
def mnist():
    from vaekit import load_dataset

    return load_dataset("mnist")


@pytest.fixture
def mnist_cache_copy(mnist, tmp_path) -> Path:
    """A cache folder holding a private copy of the session's verified MNIST entry, free to tamper with.

    The entry is ``<cache>/imports/<the session entry's name>`` (its key does not depend on the cache folder).
    """
    entry = Path(mnist.info.cache)
    cache = tmp_path / "mnist-cache"
    shutil.copytree(entry, cache / "imports" / entry.name)
    return cache


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory, mnist):
    """A folder dataset of 256 train and 64 test MNIST images, for fast end-to-end runs."""
    folder = tmp_path_factory.mktemp("tiny-mnist")
    for split, n, images, labels in (
        ("train", 256, mnist.train_images, mnist.train_labels),
        ("t10k", 64, mnist.test_images, mnist.test_labels),
    ):
        write_idx(folder / f"{split}-images-idx3-ubyte", (images[:n, 0] * 255).round().numpy())
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels[:n].numpy())
    return folder


@pytest.fixture(scope="session")
def uninterrupted(tiny_dataset_dir, tmp_path_factory):
    """A 3-epoch `vaekit train` run folder, run to the end without interruption (the resume tests' reference)."""
    out = tmp_path_factory.mktemp("full") / "run"
    p = vaekit(*train_args(tiny_dataset_dir, out))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    return out


@pytest.fixture(scope="session")
def vq_run(tiny_dataset_dir, tmp_path_factory):
    """A 1-epoch VQ-VAE run folder (8 codes) on the tiny dataset."""
    from vaekit.commands import train_run
    from vaekit.config import ModelConfig, TrainConfig

    out = tmp_path_factory.mktemp("vq") / "run"
    model = ModelConfig(arch="vqvae", latent_dim=2, codebook_size=8, num_filters=4)
    train = TrainConfig(dataset=str(tiny_dataset_dir), objective="vqvae", epochs=1, batch_size=64, eval_samples=1, device="cpu")
    train_run(model, train, out, progress=False)
    return out
