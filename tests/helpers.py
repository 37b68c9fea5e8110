"""Plain helpers shared by several test files (the shared fixtures are in conftest.py)."""

import gzip
import math
import pathlib
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal, kl_divergence

from vaekit import VAE, SimpleVAE
from vaekit.objectives import make_objective

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}
SIZE = 12  # image_size of the tiny models: 12 -> 8 -> 4 after the two 5x5 convolutions


# ----------------------------------------------------------------------------- tiny models and data


def tiny(**kw):
    kw.setdefault("K", 2)
    kw.setdefault("num_filters", 4)
    kw.setdefault("image_size", SIZE)
    torch.manual_seed(kw.pop("seed", 0))
    return SimpleVAE(**kw)


def rand(*shape, seed=0, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def grey_images(n, seed=0, size=SIZE):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=gen)


# ----------------------------------------------------------------------------- IDX files, written out by hand

#: The four files of an MNIST-style dataset by role (the names of LeCun's distribution).
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array, type_code: int = 0x08) -> bytes:
    """``array`` as an IDX file: the magic ``00 00 <type> <ndim>``, big-endian uint32 sizes, the bytes."""
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array, *, gz: bool = False) -> Path:
    """Write ``array`` (values 0..255) as an IDX file at ``path``, gzip'd if ``gz``; returns ``path``."""
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_idx_folder(folder: Path, *, n_train=5, n_test=3, hw=(28, 28), gz=False, seed=0) -> dict:
    """Write a small MNIST-style dataset (random bytes, one 255 and one 0 at known places); return its arrays by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255
    arrays["train_images"][0, 0, 1] = 0
    folder.mkdir(parents=True, exist_ok=True)
    for role, base in IDX_NAMES.items():
        write_idx(folder / (base + (".gz" if gz else "")), arrays[role], gz=gz)
    return arrays


# ----------------------------------------------------------------------------- image files, written with Pillow


def load_images(path, cache, **options):
    """``load_dataset(path)`` into the cache folder ``cache`` with DataConfig ``options``, no progress bar."""
    from vaekit.data import DataConfig, load_dataset

    return load_dataset(path, cache_dir=cache, config=DataConfig(**options), progress=False)


def digits(mnist, n: int, split: str = "train") -> np.ndarray:
    """The first n MNIST images of a split as [n, 28, 28] uint8."""
    return getattr(mnist, f"{split}_uint8")[:n, 0].numpy()


def write_flat(folder: Path, images, suffix: str = ".png", mode: str = "L", **save) -> list:
    """Write images (arrays [H, W] or [H, W, C]) as 00000.png, 00001.png, ... in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:05d}{suffix}"
        Image.fromarray(np.asarray(img), mode if np.asarray(img).ndim == 2 or mode != "L" else None).save(path, **save)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: (kind, size, mtime_ns, bytes of files)."""
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


# ----------------------------------------------------------------------------- ELBO terms


def ref_terms(model, x, n, seed, calibrated=False):
    """ELBO terms of ``model`` at ``x``, written out with torch.distributions.

    Re-seeds the global RNG so that the reparameterization noise is the one the ELBO objective draws
    (the noise is [N, B, K], as ``Normal(...).rsample([N])`` draws it).
    """
    k = model.K
    with torch.no_grad():
        phi = model.encoder(x)
    mu = phi[:, :k]
    sigma = phi[:, k:].exp().expand_as(mu)  # one std (isotropic) or K stds (diagonal)
    torch.manual_seed(seed)
    with torch.no_grad():
        z = Normal(mu, sigma).rsample([n]).permute(1, 0, 2)  # [B, N, K]
        out = model.decode(z).reshape(x.shape[0], n, -1)  # [B, N, D]
    xf = x.reshape(x.shape[0], 1, -1).expand_as(out)
    if model.likelihood.name == "bernoulli":
        rec = Independent(Bernoulli(logits=out), 1).log_prob(xf).mean(1)
        sig_x = None
    else:
        if calibrated:
            sig_x = torch.tensor(float(np.sqrt(np.mean((xf - out).double().numpy() ** 2))), dtype=x.dtype)
        else:
            sig_x = model.log_sig_x.detach().exp()
        rec = Independent(Normal(out, sig_x.expand_as(out)), 1).log_prob(xf).mean(1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    kl = kl_divergence(Independent(Normal(mu, sigma), 1), prior)
    return rec, kl, sig_x


def model_terms(model, x, n, seed, calibrated=False):
    torch.manual_seed(seed)
    with torch.no_grad():
        return make_objective("elbo", {"samples": n})(model, x, calibrated=calibrated)


# ----------------------------------------------------------------------------- a linear-Gaussian model: log p(x) exactly


class Linear(nn.Module):
    def __init__(self, weight, bias, out_shape=None):
        super().__init__()
        self.weight, self.bias, self.out_shape = weight, bias, out_shape

    def forward(self, x):
        y = x.reshape(x.shape[0], -1) @ self.weight.T + self.bias
        return y if self.out_shape is None else y.reshape(y.shape[0], *self.out_shape)


def linear_gaussian(seed=0, k=2, shape=(1, 2, 3), sigma=0.6, posterior="diagonal"):
    """x = W z + b + sigma noise; q(z|x) a linear map of x near, but not at, the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    p = k + 1 if posterior == "isotropic" else 2 * k
    cov = torch.linalg.inv(torch.eye(k, dtype=torch.float64) + W.T @ W / sigma**2)  # the exact posterior's
    gain = 0.6 * cov @ W.T / sigma**2  # [K, D], 0.6 x the exact posterior mean's
    A = torch.cat([gain, torch.zeros(p - k, d, dtype=torch.float64)])  # [P, D]
    log_s = 0.5 * torch.log(torch.diagonal(cov)) + 0.7  # twice too wide
    c = torch.cat([-gain @ b, log_s if p == 2 * k else log_s.mean().reshape(1)])
    model = VAE(Linear(A, c), Linear(W, b, shape), k, posterior=posterior, image_shape=shape).double()
    with torch.no_grad():
        model.log_sig_x.fill_(math.log(sigma))
    x = (torch.randn(8, k, generator=g, dtype=torch.float64) @ W.T + b + sigma * torch.randn(8, d, generator=g, dtype=torch.float64))
    exact = MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(d, dtype=torch.float64)).log_prob(x)  # [8]
    return model, x.reshape(8, *shape), exact


def reference_log_w(model, x, z):
    """log p(x|z) + log p(z) - log q(z|x) for z [B, N, K], with torch.distributions."""
    phi = model.encoder(x)
    k = model.latent_dim
    mu, sig = phi[:, :k], phi[:, k:].exp().expand(-1, k)
    q = Independent(Normal(mu[:, None], sig[:, None]), 1)
    prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
    out = model.decoder(z.reshape(-1, k)).reshape(*z.shape[:2], -1)
    px = Independent(Normal(out, model.log_sig_x.exp()), 1)
    return px.log_prob(x.reshape(x.shape[0], 1, -1)) + prior.log_prob(z) - q.log_prob(z)  # [B, N]




# ----------------------------------------------------------------------------- malicious pickles


class _Touch:
    """Unpickling this calls Path(path).touch(): proof that code ran."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def pickle_payload(sentinel: Path) -> bytes:
    return pickle.dumps({"encoder.0.weight": _Touch(sentinel)})


def torch_save_payload(sentinel: Path, path: Path) -> None:
    state = SimpleVAE(num_filters=4).state_dict()
    state["log_sig_x"] = _Touch(sentinel)  # a state_dict with a live object inside
    torch.save(state, path)


# ----------------------------------------------------------------------------- `vaekit train` in a subprocess


def vaekit(*args, **kw):
    """``python -m vaekit ARGS`` started in the background (a Popen with text pipes)."""
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_vaekit(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m vaekit ARGS`` run to its end: the exit status and text output."""
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for_checkpoint(run, proc, step_at_least, timeout=120) -> int:
    """Wait until the run folder's checkpoint holds at least ``step_at_least`` steps (``proc`` still running); its step."""
    import time

    from vaekit.checkpoint import load_checkpoint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            _, state, _ = load_checkpoint(run)
            if state.step >= step_at_least:
                return state.step
        except Exception:  # noqa: BLE001 - not written yet, or being replaced (atomically): try again
            pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of step {step_at_least} appeared in {run} within {timeout} s")


def train_args(dataset, out, extra=()):
    return ["train", "--dataset", str(dataset), "--out", str(out), "--epochs", "3", "--batch-size", "16",
            "--samples", "2", "--num-filters", "4", "--eval-samples", "1", "--checkpoint-every", "2",
            "--device", "cpu", "--seed", "5", "--no-progress", *extra]


def mount_tmpfs(path, options):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


def tiny_vq(seed: int = 3):
    """A VQ-VAE with a 2x2 grid of codes from a 4x3 image (downsample 1), 3 codes: 81 code grids in all, float64,
    sigma_x 0.3 and a codebook drawn from N(0, 1) after ``seed``."""
    from vaekit.config import ModelConfig
    from vaekit.model import build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="vqvae", latent_dim=2, codebook_size=3, downsample=1, num_filters=3), (1, 4, 3)).double()
    with torch.no_grad():
        model.log_sig_x.fill_(math.log(0.3))
        model.codebook.vectors.normal_()
    return model
