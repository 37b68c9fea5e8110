"""Image features for measuring sample quality offline: a small conv classifier trained here, per dataset.

The standard FID needs Inception weights downloaded at run time; nothing here downloads anything.
Instead :func:`load_extractor` trains a small conv classifier on the dataset's labelled training
split (a few minutes on two CPU cores for MNIST), measures its accuracy on the test split, and
caches it as safetensors (SHA-256 checked, nothing unpickled) with a JSON sidecar, keyed by a
digest of the dataset's bytes and labels and of the training recipe. Its hidden layer's
:data:`FEATURE_SIZE` pre-activations are the features; its softmax gives class probabilities.

A dataset without labels (all ``-1``, or a single class) gets a clearly named fallback: the same
network with fixed random weights (seeded), which gives features but no probabilities. Its
``name`` says so ("random conv features (no labels, seed 0)"), and every printout of a figure
measured in these features should show that name.

The network, for images [C, H, W] of any size with H, W >= 4 (grey or colour):
conv3x3(C->32)-BN-ReLU-maxpool2, conv3x3(32->64)-BN-ReLU-maxpool2, conv3x3(64->128)-BN-ReLU,
adaptive average pool to 4x4, linear(2048->128) = the features [128], ReLU, linear(128->classes).
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import sys
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, atomic_write_text, load_weights, save_weights

if TYPE_CHECKING:
    from .data import ImageData

__all__ = ["FeatureExtractor", "FeatureNet", "load_extractor", "dataset_digest", "FEATURE_SIZE", "RECIPE"]

#: size of the feature vector: the hidden layer's pre-activations. Before its ReLU, not after: after it,
#: 88 of the 128 units of the MNIST classifier were zero on every test image (constant features)
FEATURE_SIZE = 128
#: how the classifier is trained; part of the cache key, so a change retrains
RECIPE = {"format": "vaekit.features/2", "epochs": 4, "batch_size": 128, "lr": 2e-3, "seed": 0}
_EVAL_BATCH = 1024
_DIGEST_CHUNK = 1 << 24  # elements hashed per step


class FeatureNet(nn.Module):
    """The conv classifier; ``forward(x [N, C, H, W] floats in [0, 1]) -> (features [N, 128], logits [N, classes])``."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(2048, FEATURE_SIZE),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_SIZE, max(classes, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x - 0.5)  # [N, 128] the hidden layer before its ReLU: the features
        return h, self.head(h)  # [N, 128], [N, classes]

    def init_weights(self, seed: int) -> None:
        """He-uniform weights drawn from a generator seeded with ``seed``, zero biases: the same
        numbers on every machine and torch version (torch's own default initialisation may change)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    fan_in = m.weight[0].numel()
                    bound = math.sqrt(6.0 / fan_in)  # He et al. 2015, eq. 10, as a uniform
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64).mul(2 * bound).sub(bound))
                    m.bias.zero_()


def dataset_digest(data: "ImageData") -> str:
    """SHA-256 (hex) of a dataset's train and test bytes and labels, with their shapes, hashed in chunks."""
    h = hashlib.sha256()
    for name in ("train_uint8", "train_labels", "test_uint8", "test_labels"):
        t = getattr(data, name)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        for start in range(0, flat.numel(), _DIGEST_CHUNK):
            h.update(flat[start : start + _DIGEST_CHUNK].numpy())
    return h.hexdigest()


class FeatureExtractor:
    """A feature network and what it is: ``name``, ``kind`` ("classifier" or "random"), ``accuracy``
    (test accuracy in [0, 1]; None for "random" or an unlabelled test split), ``classes`` (count; 0
    for "random"), ``class_names``, ``image_shape`` (C, H, W), ``feature_size`` and ``info`` (the sidecar)."""

    def __init__(self, net: FeatureNet, info: dict):
        self.net = net.eval()
        self.info = info
        self.kind: str = info["kind"]
        self.accuracy: float | None = info.get("accuracy")
        self.classes: int = int(info.get("classes") or 0)
        self.class_names: list[str] | None = info.get("class_names")
        self.image_shape: tuple[int, int, int] = tuple(info["image_shape"])
        self.feature_size: int = FEATURE_SIZE
        self.name: str = info["name"]

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name!r}, image_shape={self.image_shape}, feature_size={self.feature_size})"

    def _check(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise ValueError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape or images.shape[0] < 1:
            raise ValueError(
                f"images must be [N, C, H, W] with (C, H, W) = {self.image_shape} (the dataset's image shape) and N >= 1, "
                f"got shape {tuple(images.shape)}"
            )
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise ValueError(f"images must be uint8 (0..255) or floats in [0, 1], got dtype {images.dtype}")
        return images

    @torch.no_grad()
    def features_and_probs(self, images: Tensor, batch_size: int = _EVAL_BATCH) -> tuple[Tensor, Tensor | None]:
        """(features [N, 128] float32, class probabilities [N, classes] float32 or None for "random") of
        images [N, C, H, W], uint8 in 0..255 or floats in [0, 1]; batched, no gradients, in eval mode, on the CPU."""
        from .data import to_float

        images = self._check(images)
        self.net.eval()
        feats, probs = [], []
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size].to("cpu")).to(torch.float32)  # [b, C, H, W]
            h, logits = self.net(x)
            feats.append(h)
            probs.append(logits.softmax(dim=1))
        return torch.cat(feats), (torch.cat(probs) if self.kind == "classifier" else None)

    def features(self, images: Tensor, batch_size: int = _EVAL_BATCH) -> Tensor:
        """Features [N, 128] float32 of images [N, C, H, W] (uint8 or floats in [0, 1])."""
        return self.features_and_probs(images, batch_size)[0]

    def probs(self, images: Tensor, batch_size: int = _EVAL_BATCH) -> Tensor | None:
        """Class probabilities [N, classes] float32, or None where the extractor is not a classifier."""
        return self.features_and_probs(images, batch_size)[1]


def _short_name(data: "ImageData") -> str:
    return pathlib.Path(str(data.name)).name or str(data.name)


def _random_extractor(data: "ImageData", reason: str, seed: int) -> FeatureExtractor:
    """The fallback without labels: the network with fixed random (seeded) weights, untrained."""
    c, h, w = data.train_uint8.shape[1:]
    net = FeatureNet(c, 0)
    net.init_weights(seed)
    info = {
        "kind": "random", "name": f"random conv features ({reason}, seed {seed})", "accuracy": None, "classes": 0,
        "class_names": None, "image_shape": [c, h, w], "feature_size": FEATURE_SIZE, "seed": seed,
    }
    return FeatureExtractor(net, info)


def _train(net: FeatureNet, images: Tensor, labels: Tensor, recipe: dict, progress: bool) -> None:
    """Adam with a cosine learning-rate decay to 0, cross-entropy, shuffled batches from a seeded generator."""
    from tqdm.auto import tqdm

    from .data import to_float

    g = torch.Generator().manual_seed(recipe["seed"] + 1)
    n, bs = images.shape[0], recipe["batch_size"]
    steps_per_epoch = math.ceil(n / bs)
    total = recipe["epochs"] * steps_per_epoch
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    net.train()
    with tqdm(total=total, desc="training the feature classifier", disable=not progress, file=sys.stderr) as bar:
        for epoch in range(recipe["epochs"]):
            order = torch.randperm(n, generator=g)  # [n]
            for b in range(steps_per_epoch):
                idx = order[b * bs : (b + 1) * bs]
                x, y = to_float(images[idx]), labels[idx]  # [b, C, H, W], [b]
                loss = nn.functional.cross_entropy(net(x)[1], y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                if b % 50 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    net.eval()


@torch.no_grad()
def _accuracy(extractor: FeatureExtractor, images: Tensor, labels: Tensor) -> float | None:
    """Share of labelled images whose most probable class is their label (None if none is labelled)."""
    keep = labels >= 0
    if not bool(keep.any()):
        return None
    probs = extractor.probs(images[keep])  # [n, classes]
    return float((probs.argmax(dim=1) == labels[keep]).double().mean())


def _classifier_name(data: "ImageData", accuracy: float | None) -> str:
    acc = "test accuracy unknown: no test labels" if accuracy is None else f"test accuracy {100 * accuracy:.2f}%"
    return f"classifier trained on {_short_name(data)}, {acc}"


def _load_cached(path: pathlib.Path, expected: dict) -> FeatureExtractor | None:
    """The cached classifier at ``path`` if it is intact and made for ``expected`` (digest, recipe, shape,
    classes); None if it is missing; a note on stderr and None if it is corrupt or made for other data."""
    if not path.exists():
        return None
    try:
        tensors, meta = load_weights(path)
        info = json.loads(meta["vaekit.features"])
        for key, value in expected.items():
            if info.get(key) != value:
                raise ValueError(f"{key} is {info.get(key)!r}, expected {value!r}")
        c, _, _ = info["image_shape"]
        net = FeatureNet(c, info["classes"])
        net.load_state_dict(tensors, strict=True)
        return FeatureExtractor(net, info)
    except (CheckpointError, KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
        print(f"vaekit: the cached feature classifier {path} is unusable ({e}); training it again", file=sys.stderr)
        return None


def load_extractor(
    data: "ImageData",
    *,
    cache_dir: str | pathlib.Path | None = None,
    progress: bool = False,
    epochs: int | None = None,
    seed: int = 0,
) -> FeatureExtractor:
    """The feature extractor for ``data``: its classifier from the cache, else trained now and cached.

    The cache is ``cache_dir`` (default ``vaekit.data.default_cache_dir() / "features"``), holding
    ``<key>.safetensors`` (weights, SHA-256 checked on load) and ``<key>.json`` (accuracy, dataset
    digest, image shape, classes, epochs, seconds, feature size), where ``key`` digests the dataset
    (:func:`dataset_digest`) and the recipe (:data:`RECIPE`, with ``epochs`` and ``seed`` if given).
    A cache file that is corrupt or made for other data is trained again, never trusted. Training
    is seeded and deterministic on the CPU; ``progress`` shows a tqdm bar on stderr.

    Data without at least two labelled classes in the training split gets the fallback: fixed
    random weights (seed ``seed``), ``kind == "random"``, no probabilities, nothing cached.
    """
    from .data import default_cache_dir

    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be an int >= 1 or None (the recipe's {RECIPE['epochs']}), got {epochs!r}")
    c, h, w = data.train_uint8.shape[1:]
    if min(h, w) < 4:
        raise ValueError(f"the feature network needs images of at least 4x4 pixels, got image shape {(c, h, w)}")
    labels = data.train_labels
    labelled = labels >= 0
    present = torch.unique(labels[labelled])
    if present.numel() < 2:
        return _random_extractor(data, "no labels" if present.numel() == 0 else "a single labelled class", seed)
    recipe = {**RECIPE, "seed": seed, **({"epochs": epochs} if epochs is not None else {})}
    digest = dataset_digest(data)
    key = hashlib.sha256(f"{digest}:{json.dumps(recipe, sort_keys=True)}".encode()).hexdigest()[:24]
    folder = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir() / "features"
    path = folder / f"{key}.safetensors"
    classes = int(present.max()) + 1
    expected = {"dataset_digest": digest, "recipe": recipe, "image_shape": [c, h, w], "classes": classes}
    cached = _load_cached(path, expected)
    if cached is not None:
        cached.name = _classifier_name(data, cached.accuracy)  # the same bytes may come under another name
        return cached

    net = FeatureNet(c, classes)
    net.init_weights(recipe["seed"])
    start = time.perf_counter()
    _train(net, data.train_uint8[labelled], labels[labelled], recipe, progress)
    seconds = time.perf_counter() - start
    info = {
        "kind": "classifier", **expected, "accuracy": None, "class_names": data.info.get("classes"),
        "epochs": recipe["epochs"], "seconds": round(seconds, 1), "feature_size": FEATURE_SIZE,
        "train_images": int(labelled.sum()), "test_images": int((data.test_labels >= 0).sum()), "dataset": str(data.name),
    }
    extractor = FeatureExtractor(net, {**info, "name": _classifier_name(data, None)})
    info["accuracy"] = _accuracy(extractor, data.test_uint8, data.test_labels)
    info["name"] = _classifier_name(data, info["accuracy"])
    extractor = FeatureExtractor(net, info)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(path, net.state_dict(), {"vaekit.features": json.dumps(info)})
        atomic_write_text(folder / f"{key}.json", json.dumps(info, indent=2) + "\n")
    except OSError as e:
        print(f"vaekit: could not cache the feature classifier in {folder} ({e}); it will be trained again next time", file=sys.stderr)
    return extractor
