"""A run folder: the files a run writes, what each holds, and loading its model and data back.

A run folder holds::

    config.json        the model, training and data configs (the chosen parts and their options),
                       the dataset, device, precision, plugin files, versions, notes
    model.safetensors  the weights (the VAE's state_dict), rewritten at every checkpoint
    metrics.jsonl      one JSON object per epoch: train/test ELBO (nats per image), sigma_x, seconds, ...
    checkpoint.safetensors  everything to resume: model, optimizer, RNG states, position, config, metrics
    elbo_curve.png, samples.png, reconstructions.png, latent_map.png, latent_scatter.png, interpolations.png
                       the figures (``vaekit.commands.figures``)
    report.html        all of it on one self-contained page with the latent explorer (``vaekit.commands.report``)
    eval_SPLIT.json    written by ``vaekit eval``
    samples_*.png and a sampler's own files (``gmm.safetensors``, ``gmm.json``; a VQ-VAE's code prior
                       ``vq_prior.safetensors``, ``vq_prior.json``), written by ``vaekit sample``

Every file is written atomically, so an interrupted run never leaves a torn file; a process
that writes the folder holds its lock (``checkpoint.RunLock``). ``RunFolder`` knows these
names, reads config.json into typed configs (runs of earlier versions included), reads and
writes metrics.jsonl, and rebuilds the run's model and dataset.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import CHECKPOINT, DIGEST_KEY, CheckpointError, atomic_write_text, load_checkpoint, load_weights, read_json
from .config import DataConfig, ModelConfig, TrainConfig, config_from_dict, config_to_dict, resolve_device, validate
from .data import ImageData, NpyRows, binarize, load_dataset, resident_limit_bytes
from .model import VAE, build_model
from .registry import load_plugins, loaded_plugins

__all__ = [
    "RunFolder", "run_meta", "load_run", "split_images", "training_images", "read_metrics", "CONFIG", "MODEL", "METRICS", "REPORT",
    "FIGURES", "RUN_FILES", "DERIVED_FILES", "CHECKPOINT",
]

CONFIG = "config.json"
MODEL = "model.safetensors"
METRICS = "metrics.jsonl"
REPORT = "report.html"
FIGURES = ("elbo_curve.png", "samples.png", "reconstructions.png", "latent_map.png", "latent_scatter.png", "interpolations.png")
#: what training writes in a run folder
RUN_FILES = (CONFIG, MODEL, METRICS, *FIGURES, REPORT, CHECKPOINT)
#: what the other commands derive from a trained model (eval, sample, a sampler's fit, a conditional model's figures);
#: ``train --overwrite`` removes them with the old model, so that no report shows another model's numbers
DERIVED_FILES = ("eval_test.json", "eval_train.json", "sample_quality.json", "gmm.safetensors", "gmm.json",
                 "vq_prior.safetensors", "vq_prior.json", "class_grid.png", "completions.png", "condition_grid.png")
DERIVED_PATTERNS = ("samples_*.png",)  # vaekit sample's default files


class RunFolder:
    """A run folder at ``path``: its file names, its config.json as typed configs, its metrics, model and data."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._meta: dict[str, Any] | None = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def check_exists(self) -> "RunFolder":
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} does not exist or is not a folder")
        return self

    # ---------------------------------------------------------------- config.json

    @property
    def meta(self) -> dict[str, Any]:
        """config.json as a dict (read once); CheckpointError naming the file if it is missing or not an object."""
        if self._meta is None:
            self._meta = read_json(self.path / CONFIG)
        return self._meta

    def write_config(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.path / CONFIG, json.dumps(meta, indent=2) + "\n")
        self._meta = meta

    def section(self, key: str, cls: type) -> Any:
        """config.json's ``key`` section as a validated ``cls``; CheckpointError naming the file."""
        try:
            section = self.meta[key]
            if not isinstance(section, dict):
                raise ValueError(f"{key} must be a JSON object, got {type(section).__name__}")
            cfg = config_from_dict(cls, section)
            validate(cfg)
        except KeyError as e:
            raise CheckpointError(f"{self.path / CONFIG} is not a vaekit run config: missing key {e}") from None
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{self.path / CONFIG} is not a vaekit run config: {e}") from None
        return cfg

    def model_config(self) -> ModelConfig:
        self.load_plugins()
        return self.section("model", ModelConfig)

    def train_config(self) -> TrainConfig:
        self.load_plugins()
        return self.section("train", TrainConfig)

    def data_config(self) -> DataConfig:
        """How the run read its dataset (config.json's data_config; the defaults for runs of vaekit 0.1)."""
        return DataConfig() if "data_config" not in self.meta else self.section("data_config", DataConfig)

    def image_shape(self) -> tuple[int, int, int]:
        """The [C, H, W] the run was trained on: data.image_shape, or [1, S, S] from data.image_size (vaekit 0.1)."""
        try:
            data = self.meta.get("data") or {}
            if not isinstance(data, dict):
                raise ValueError(f"data must be a JSON object, got {type(data).__name__}")
            shape = data.get("image_shape")
            if shape is None:
                size = data.get("image_size", 28)
                shape = [1, size, size]
            if not isinstance(shape, list) or len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
                raise ValueError(f"data.image_shape must be [C, H, W] of positive ints, got {shape!r}")
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{self.path / CONFIG} is not a vaekit run config: {e}") from None
        return tuple(shape)  # type: ignore[return-value]

    def global_batch(self) -> int | None:
        """Images per optimizer step of a data-parallel run (config.json's distributed.global_batch_size), else None."""
        dist = self.meta.get("distributed")
        value = dist.get("global_batch_size") if isinstance(dist, dict) else None
        return value if isinstance(value, int) and value > 0 else None

    def weights_digest(self) -> str | None:
        """The SHA-256 stored in model.safetensors (of its tensors' bytes): which trained weights a fit was made
        for; None if the file is missing, unreadable or has none."""
        try:
            return load_weights(self.path / MODEL)[1].get(DIGEST_KEY)
        except CheckpointError:
            return None

    def remove_derived_files(self) -> list[Path]:
        """Remove what other commands derived from the folder's old model (``DERIVED_FILES``, ``DERIVED_PATTERNS``),
        nothing else, and only in a folder that holds a vaekit run (its config.json); returns the paths removed."""
        if not (self.path / CONFIG).is_file():
            return []  # not a run folder: its files are the user's
        found = [self.path / n for n in DERIVED_FILES] + [p for pattern in DERIVED_PATTERNS for p in self.path.glob(pattern)]
        removed = [p for p in found if p.is_file()]
        for p in removed:
            p.unlink()
        return removed

    def batch_elbos(self) -> list[float] | None:
        """The per-step train ELBO of the run's checkpoint (the training curve's steps), or None without one."""
        if not (self.path / CHECKPOINT).exists():
            return None
        return load_checkpoint(self.path)[1].elbos.tolist()

    def load_plugins(self) -> None:
        """Import the plugin files the run was trained with (config.json's "plugins"), so that their parts are known."""
        plugins = self.meta.get("plugins") or []
        try:
            load_plugins([p for p in plugins if isinstance(p, str)])
        except ValueError as e:
            raise CheckpointError(f"{self.path / CONFIG}: {e}") from None

    # ---------------------------------------------------------------- metrics.jsonl

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of metrics.jsonl (malformed lines skipped; ``read_metrics`` also says which)."""
        return read_metrics(self.path / METRICS)[0]

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    # ---------------------------------------------------------------- evaluations and other JSON files

    def write_json(self, name: str, obj: dict[str, Any]) -> Path:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2) + "\n")
        return self.path / name

    # ---------------------------------------------------------------- the model and the data

    def load_model(self, device: str | torch.device = "cpu") -> VAE:
        """The run's model on ``device``, rebuilt from config.json (the parts, their options and the image shape),
        its weights loaded after every name and shape is checked against model.safetensors; CheckpointError if not."""
        self.check_exists()
        model_cfg = self.model_config()
        image_shape = self.image_shape()
        tensors, _ = load_weights(self.path / MODEL)
        try:
            with torch.device("meta"):  # shapes only: a bad config allocates nothing
                expected = {k: v.shape for k, v in build_model(model_cfg, image_shape).state_dict().items()}
        except ValueError as e:
            raise CheckpointError(f"{self.path / CONFIG}: cannot rebuild its model: {e}") from None
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        what = (f"the model in config.json (arch {model_cfg.resolved(image_shape).arch}, latent_dim={model_cfg.latent_dim}, "
                f"image shape {list(image_shape)})")
        if missing or unexpected:
            raise CheckpointError(
                f"{self.path / MODEL} does not match {what}: missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
            )
        for key, t in tensors.items():
            if t.shape != expected[key]:
                raise CheckpointError(f"{self.path / MODEL}: {key} has shape {list(t.shape)}, expected {list(expected[key])} for {what}")
        model = build_model(model_cfg, image_shape)
        model.load_state_dict(tensors)
        return model.to(resolve_device(device))

    def load_data(self, progress: bool = False) -> ImageData:
        """The run's dataset, read as it was for training."""
        return load_dataset(self.train_config().dataset, config=self.data_config(), progress=progress)

    def images(self, data: ImageData, split: str = "test") -> Any:
        """``split_images`` of the run's dataset, binarized as the run was trained."""
        return split_images(data, self.train_config(), split)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[VAE, dict[str, Any]]:
    """Load a run folder's model (on ``device``) and its config.json; CheckpointError if anything is off."""
    run = RunFolder(run_dir)
    return run.load_model(device), run.meta


def split_images(data: ImageData, train_cfg: TrainConfig, split: str = "test") -> Any:
    """The images a run is measured on: ``split`` ("train" or "test"), binarized as the run was trained.

    Without binarization these are the uint8 bytes (made float a batch at a time by whoever reads
    them), read from the cache file a batch at a time when the split is larger than memory
    (``data.resident_limit_bytes``). With ``binarize`` "dynamic" or "static" the split is drawn
    once with the fixed seed ``data.BINARIZE_SEED``, so every evaluation sees the same binary images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if train_cfg.binarize != "none":
        return binarize(data.train_images if split == "train" else data.test_images)
    return _bytes_or_stream(data, split)


def training_images(data: ImageData) -> Any:
    """What ``fit`` trains on: floats where the data was given as floats, else the uint8 bytes, streamed
    from the import cache a batch at a time when they are larger than memory."""
    floats = data.given_floats("train")
    return floats if floats is not None else _bytes_or_stream(data, "train")


def _bytes_or_stream(data: ImageData, split: str) -> Any:
    u8 = getattr(data, f"{split}_uint8")
    cache = data.info.cache
    path = Path(cache) / f"{split}.npy" if cache else None
    if u8.numel() > resident_limit_bytes() and path is not None and path.exists():
        return NpyRows(path)
    return u8


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The per-epoch rows of ``metrics.jsonl`` and a list of problems (malformed lines skipped)."""
    if not path.is_file():
        return [], []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return [], [f"cannot read {path.name}: {e.strerror or e}"]
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(number)
    problems = []
    if bad:
        shown = ", ".join(str(n) for n in bad[:10]) + (", …" if len(bad) > 10 else "")
        problems.append(f"{path.name}: skipped {len(bad)} malformed line{'s' if len(bad) > 1 else ''} (line {shown}).")
    return rows, problems


def run_meta(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, data: ImageData, device: torch.device,
    precision: tuple[str, str], notes: list[str],
) -> dict[str, Any]:
    """What config.json holds for a new run: the configs, the dataset, device, precision (used, why), versions, the
    plugin files its parts came from, the time and notes."""
    image_shape = list(data.train_uint8.shape[1:])  # [C, H, W]
    meta = {
        "vaekit_version": __version__,
        "model": config_to_dict(model_cfg),
        "train": config_to_dict(train_cfg),
        "data_config": config_to_dict(data_cfg),
        "data": {
            "name": data.name, "image_size": image_shape[-1], "image_shape": image_shape,
            "train_images": len(data.train_uint8), "test_images": len(data.test_uint8),
            "info": data.info.to_dict(),
        },
        "device": str(device),
        "precision": {"used": precision[0], "reason": precision[1]},
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if loaded_plugins():  # parts from plugin files: loading the run imports them again
        meta["plugins"] = loaded_plugins()
    if notes:
        meta["notes"] = list(notes)
    return meta
