"""A training run as a folder: train, evaluate each epoch, save, and draw its figures.

A run folder holds::

    config.json        model and training configs, dataset, device, versions
    model.safetensors  the weights (state_dict of the VAE), rewritten each epoch
    metrics.jsonl      one JSON object per epoch: train/test ELBO (nats per image), sigma_x, seconds
    elbo_curve.png     the training curve with per-epoch train and test ELBO
    samples.png        64 images decoded from z ~ N(0, I)
    reconstructions.png, latent_map.png, latent_scatter.png, interpolations.png
                       what the model learned (see ``write_run_figures``)
    report.html        all of the above in one self-contained page with the latent explorer (``report_run``)
    eval_test.json     written by ``vaekit eval``: ELBO, log-likelihood, latent diagnostics
    gmm.safetensors, gmm.json, samples_gmm.png
                       written by ``vaekit sample --sampler gmm``: a Gaussian mixture fitted to
                       the training set's posterior means, its held-out log-density, its samples
    checkpoint.safetensors  everything to resume: model, optimizer, RNG states, data position,
                       config and metrics; written at each epoch end, every --checkpoint-every
                       steps, on SIGINT/SIGTERM and at the end

Every file is written atomically, so an interrupted run never leaves a torn file.

Data-parallel (under torchrun): every rank trains and evaluates its share, only rank 0
writes files; resuming reads the run folder on every rank (on several machines it must
be on a filesystem they share).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import __version__, distributed
from .architectures import flops_per_image
from .checkpoint import (
    CHECKPOINT, CheckpointError, RunLock, TrainState, atomic_write_text, load_checkpoint, load_weights, read_json,
    remove_stale_temp_files, save_checkpoint,
)
from .config import (
    DataConfig, ModelConfig, TrainConfig, config_from_dict, config_to_dict, resolve_device, resolve_precision, validate,
)
from .data import ImageData, NpyRows, binarize, check_min_images, load_dataset, resident_limit_bytes, to_float
from .evaluation import DEQUANTIZATION_NOTE, LIKELIHOOD_NOTE, evaluate, matmul_peak_gflops, seeded_rng
from .explorer import explorer_html
from .explorer import note_html as explorer_note
from .gmm import GMM, fit_gmm, load_gmm, save_gmm, standard_normal_log_prob
from .latents import interpolate, latent_grid, pca, posterior_means, reconstruct
from .model import VAE, build_model, describe_model, eval_mode, generate_images, param_device
from .plots import (
    plot_elbo_curve, plot_interpolations, plot_latent_map, plot_latent_scatter, plot_reconstructions, plot_samples,
)
from .report import read_metrics, write_report
from .train import fit, set_seed
from .train.monitor import Monitor, TensorBoard

__all__ = [
    "train_run", "load_run", "sample_run", "eval_run", "figures_run", "report_run", "write_run_figures",
    "build_model", "resolve_arch", "describe_model", "split_images", "fit_batch_to_data", "RUN_FILES", "FIGURES",
]

FIGURES = ("elbo_curve.png", "samples.png", "reconstructions.png", "latent_map.png", "latent_scatter.png", "interpolations.png")
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", *FIGURES, "report.html", CHECKPOINT)


def resolve_arch(model_cfg: ModelConfig, image_shape: tuple[int, int, int]) -> str:
    """``model_cfg.arch``, or the default for these images: "assignment" for 28x28 grey, else "conv"."""
    return model_cfg.resolved(image_shape).arch


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


def _refuse_existing_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} already exists and is not empty; pass --overwrite or choose another --out")


def _make_out_dir(out: Path) -> None:
    """Create ``out`` and check that a file can be written in it (a clear error if not)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise OSError(e.errno, f"output folder {out} is not writable: {e.strerror}") from None


def _config_section(run: Path, meta: dict[str, Any], key: str, cls: type):
    """Parse and validate ``meta[key]`` of a run's config.json as ``cls``; CheckpointError naming the file."""
    try:
        section = meta[key]
        if not isinstance(section, dict):
            raise ValueError(f"{key} must be a JSON object, got {type(section).__name__}")
        cfg = config_from_dict(cls, section)
        validate(cfg)
    except KeyError as e:
        raise CheckpointError(f"{run / 'config.json'} is not a vaekit run config: missing key {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run / 'config.json'} is not a vaekit run config: {e}") from None
    return cfg


def train_run(
    model_cfg: ModelConfig | None,
    train_cfg: TrainConfig | None,
    out_dir: str | Path,
    *,
    data_cfg: DataConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    device: str | None = None,
) -> Path:
    """Train a VAE as configured and write the run folder ``out_dir``; returns its path.

    ``data_cfg`` says how to read ``train_cfg.dataset`` (image size, channels, test split,
    bad files; ``DataConfig()`` by default). With ``resume=True`` the configs come from
    ``out_dir/config.json`` (pass None) and training continues from
    ``out_dir/checkpoint.safetensors``; ``device`` may move it. The process holds the
    folder's lock (``checkpoint.RunLock``) while it writes there, and first removes the
    temporary files of saves that a kill interrupted (``remove_stale_temp_files``).

    A ``batch_size`` larger than the training set trains on the whole set as one batch
    (one process; a note says so, and config.json records the batch used and the note);
    a data-parallel run whose global batch is larger is refused. A figure that cannot
    be drawn is skipped with a note (``write_run_figures``); the model, metrics and
    report are written regardless.
    """
    out = Path(out_dir)
    dist_info = distributed.current()
    main = dist_info is None or dist_info.is_main  # the only process that writes files
    with contextlib.ExitStack() as stack:
        if resume:
            if not out.is_dir():
                raise CheckpointError(f"cannot resume: run folder {out} does not exist")
            if main:
                _lock_run_folder(out, stack)
        else:
            assert model_cfg is not None and train_cfg is not None
            validate(model_cfg)
            validate(train_cfg)
            distributed.run_on_main(lambda: _refuse_existing_out_dir(out, overwrite))  # before the data is loaded
        return _train_run(
            model_cfg, train_cfg, data_cfg or DataConfig(), out, stack, overwrite=overwrite, progress=progress, resume=resume, device=device,
        )


#: what training writes in a run folder (under its lock): their interrupted saves' temporary files are removed
TRAINING_FILES = frozenset(RUN_FILES)


def _lock_run_folder(out: Path, stack: contextlib.ExitStack) -> None:
    """Take the run folder's lock until the run ends (``stack``), then remove the temporary files that
    saves interrupted by a kill left there: only ``atomic_write``'s of the files training writes."""
    stack.enter_context(RunLock(out))
    removed = remove_stale_temp_files(out, TRAINING_FILES)
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        print(f"note: removed {len(removed)} temporary file{'s' * (len(removed) > 1)} that interrupted saves left in {out} "
              f"({names})", flush=True)


def fit_batch_to_data(train_cfg: TrainConfig, n_train: int, world: int = 1) -> str | None:
    """A batch larger than the ``n_train`` training images becomes the whole set (one process): sets
    ``train_cfg.batch_size`` and returns the note that says so; None when nothing changes. A data-parallel
    run is left as it is (``check_min_images`` refuses it: each process needs its own share of a batch)."""
    if world != 1 or train_cfg.batch_size <= n_train:
        return None
    note = (f"batch size {train_cfg.batch_size} is larger than the {n_train} training images; "
            f"training on all {n_train} as one batch")
    train_cfg.batch_size = n_train
    return note


def _read_resume(out: Path, device: str | None, main: bool) -> tuple[Any, ...]:
    """A run folder's configs and checkpoint: (meta, model_cfg, train_cfg, data_cfg, model state_dict, TrainState, rows)."""
    meta = read_json(out / "config.json")
    model_cfg = _config_section(out, meta, "model", ModelConfig)
    train_cfg = _config_section(out, meta, "train", TrainConfig)
    data_cfg = run_data_config(out, meta)
    if device is not None:
        train_cfg.device = device
    model_sd, state, rows = load_checkpoint(out)
    if state.finished and main:
        print(f"the run in {out} already finished ({state.step} steps); nothing to resume")
    return meta, model_cfg, train_cfg, data_cfg, model_sd, state, rows


def _train_run(
    model_cfg: ModelConfig | None, train_cfg: TrainConfig | None, data_cfg: DataConfig, out: Path, stack: contextlib.ExitStack, *,
    overwrite: bool, progress: bool, resume: bool, device: str | None,
) -> Path:
    state, rows, model_sd, notes = None, [], None, []
    dist_info = distributed.current()
    world = 1 if dist_info is None else dist_info.world_size
    main = dist_info is None or dist_info.is_main
    if resume:
        meta, model_cfg, train_cfg, data_cfg, model_sd, state, rows = _read_resume(out, device, main)
    assert model_cfg is not None and train_cfg is not None
    train_device = resolve_device(train_cfg.device)  # fail early on an unavailable device

    data = load_dataset(train_cfg.dataset, config=data_cfg, progress=progress and main)
    if not resume and (note := fit_batch_to_data(train_cfg, len(data.train_uint8), world)) is not None:
        notes.append(note)  # config.json records the batch used, so a resume trains the same
        print(f"note: {note}", flush=True)
    global_batch = train_cfg.batch_size * world
    check_min_images(data, global_batch, world)
    image_shape = tuple(data.train_uint8.shape[1:])  # [C, H, W]
    model_cfg = model_cfg.resolved(image_shape)  # the arch is recorded in config.json, so load_run rebuilds the same
    set_seed(train_cfg.seed)
    model = build_model(model_cfg, image_shape)  # before anything is written: a shape the arch can't take fails here
    autocast_dtype, why = resolve_precision(train_cfg.precision, train_device)
    precision = "bf16" if autocast_dtype is not None else "fp32"
    if main:
        print(describe_model(model, model_cfg.arch), flush=True)
        print(f"precision: {precision} ({why})", flush=True)
        before = rows[-1].get("precision") if rows and isinstance(rows[-1], dict) else None
        if resume and before is not None and before != precision:
            print(f"note: the checkpoint was trained in {before}; it goes on in {precision} (same weights and optimizer, "
                  "so not bit-identical to an uninterrupted run)", flush=True)
    if not resume:

        def make_out_dir() -> None:
            _make_out_dir(out)
            _lock_run_folder(out, stack)  # before anything in the folder changes
            (out / CHECKPOINT).unlink(missing_ok=True)  # --overwrite: never resume an older run's state

        distributed.run_on_main(make_out_dir)
    test_images = split_images(data, train_cfg, "test")
    tensorboard = TensorBoard(out / "tensorboard", model, rows, train_cfg.seed) if train_cfg.tensorboard and main else None
    if resume:
        try:
            model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise CheckpointError(f"{out / CHECKPOINT}: the model weights do not fit config.json: {e}") from None
    else:
        meta = _run_meta(model_cfg, train_cfg, data_cfg, data, train_device, (precision, why), notes)
        if dist_info is not None:
            meta["distributed"] = {"world_size": world, "backend": dist_info.backend, "global_batch_size": global_batch}
        if main:
            atomic_write_text(out / "config.json", json.dumps(meta, indent=2) + "\n")

    callbacks = [Monitor(model, train_cfg, test_images, rows), *([tensorboard] if tensorboard is not None else [])]

    def on_checkpoint(st: TrainState) -> None:
        if main:  # the other ranks hold the same state; they go on and wait at the next collective
            save_checkpoint(out, model.state_dict(), st, rows, meta)

    if state is not None and state.finished:  # only the figures may be missing (killed while drawing)
        batch_elbos = state.elbos.tolist()
    else:
        result = fit(
            model, training_images(data), train_cfg, progress=progress,
            callbacks=callbacks, on_checkpoint=on_checkpoint, resume=state,
        )
        batch_elbos = result.batch_elbos

    if tensorboard is not None:
        tensorboard.close()
    if not main:
        return out
    figure_notes: list[str] = []  # the model and metrics are saved; no figure may keep the report from being written
    write_run_figures(model, data, train_cfg, out, rows, batch_elbos, global_batch=global_batch, notes=figure_notes)
    report_run(out, model=model, data=data, notes=figure_notes)
    return out


def _run_meta(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, data: ImageData, device: torch.device,
    precision: tuple[str, str], notes: list[str],
) -> dict[str, Any]:
    """What config.json holds: the configs, the dataset, device, precision (used, why), versions, time and notes."""
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
    if notes:
        meta["notes"] = list(notes)
    return meta


def write_run_figures(
    model: VAE, data: ImageData, train_cfg: TrainConfig, out: Path, rows: list[dict[str, Any]], batch_elbos: list[float] | None,
    global_batch: int | None = None, *, notes: list[str] | None = None,
) -> list[Path]:
    """Draw a run's figures into ``out``; returns their paths.

    elbo_curve.png (per-step train ELBO, per-epoch train and test; skipped without a
    history), samples.png (64 draws from the prior), reconstructions.png (16 test images,
    or all of a smaller test set, and their reconstructions), latent_map.png (decoded grid:
    the prior's quantiles for K=2, the two principal directions of the test posterior means
    for K>2, which needs 3 test images), latent_scatter.png (test posterior means coloured
    by label, PCA for K>2) and interpolations.png (8 pairs of test images, or as many as a
    smaller test set has, 10 steps). Deterministic given the seed.
    ``global_batch``: images per optimizer step (batch_size x processes; default batch_size).

    A figure that cannot be drawn (too few test images, or an error) is skipped, never the
    rest: one line on stderr names it and says why, the same line is appended to ``notes``
    (for the report), and an older file of its name is removed, so that no figure of
    another run is left in its place.
    """
    device = next(model.parameters()).device
    test = split_images(data, train_cfg, "test")
    m = len(test)  # test images
    written: list[Path] = []
    notes = [] if notes is None else notes
    cache: dict[str, Tensor] = {}

    def draw(name: str, fn: Callable[[Path], None]) -> None:
        if _draw_figure(out / name, fn, notes):
            written.append(out / name)

    def means() -> Tensor:  # [M, K] the test set's posterior means, computed once
        if "means" not in cache:
            cache["means"] = posterior_means(model, test)
        return cache["means"]

    if batch_elbos:
        steps_per_epoch = math.ceil(len(data.train_uint8) / (global_batch or train_cfg.batch_size))
        draw("elbo_curve.png", lambda p: plot_elbo_curve(batch_elbos, p, rows, steps_per_epoch))
    with seeded_rng(train_cfg.seed, device):
        draw("samples.png", lambda p: plot_samples(generate_images(model, n_images=64), p))
        order = torch.randperm(m)  # [M] which test images to show
    shown = order[: min(16, m)]  # [S] up to 16 test images
    draw("reconstructions.png", lambda p: plot_reconstructions(to_float(test[shown]), reconstruct(model, test[shown]), p))
    draw("latent_map.png", lambda p: _draw_latent_map(model, means, m, p))
    draw("latent_scatter.png", lambda p: _draw_latent_scatter(means(), data, p))
    draw("interpolations.png", lambda p: _draw_interpolations(model, test, order, p))
    return written


class FigureSkipped(Exception):
    """A figure that the data cannot give (the message says why); ``write_run_figures`` notes it and goes on."""


def _draw_figure(path: Path, fn: Callable[[Path], None], notes: list[str]) -> bool:
    """``fn(path)``; on any error (VAEKIT_DEBUG set: re-raised) one note on stderr and in ``notes``, and no file at ``path``."""
    try:
        fn(path)
        return True
    except Exception as e:  # noqa: BLE001 - one figure must never cost the run its other files
        if os.environ.get("VAEKIT_DEBUG") and not isinstance(e, FigureSkipped):
            raise
        why = str(e) if isinstance(e, FigureSkipped) else f"{type(e).__name__}: {e}"
        note = f"{path.name} skipped: {why}"
        notes.append(note)
        print(f"vaekit: note: {note}", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)  # not an older run's figure in its place
        return False


def _draw_latent_map(model: VAE, means: Callable[[], Tensor], m: int, path: Path) -> None:
    if model.K != 2 and m < 3:
        raise FigureSkipped(
            f"for K={model.K} the map spans the two principal directions of the test posterior means, which needs "
            f"at least 3 test images; the test set has {m}"
        )
    grid, what = latent_grid(model, n=15, means=None if model.K == 2 else means())
    plot_latent_map(grid, path, what)


def _draw_latent_scatter(means: Tensor, data: ImageData, path: Path) -> None:
    """The test posterior means [M, K] in 2-D: as they are for K=2, else their PCA projection."""
    M, K = means.shape
    images = f"{M} test image{'s' * (M != 1)}"
    if K == 2:
        points, axes, title = means, ("E[z_0|x]", "E[z_1|x]"), f"posterior means of the {images}"
    else:
        center, dirs, _ = pca(means, 2)
        points = (means - center) @ dirs.T  # [M, 2]
        axes, title = ("PC 1", "PC 2"), f"posterior means of the {images} (PCA of K={K})"
    labels = data.test_labels if data.info.labelled else None  # no labels: one colour
    plot_latent_scatter(points, labels, path, axes, title)


def _draw_interpolations(model: VAE, test: Any, order: Tensor, path: Path) -> None:
    """8 pairs of test images not among the reconstructions (order[16:32]); from a smaller test set, as many
    disjoint pairs as it has (up to 8)."""
    m = len(order)
    if m < 2:
        raise FigureSkipped(f"an interpolation needs a pair of test images; the test set has {m}")
    p = 8 if m >= 32 else min(8, m // 2)  # pairs
    pairs = (order[16:32] if m >= 32 else order[: 2 * p]).reshape(2, p)  # [2, P]
    plot_interpolations(interpolate(model, test[pairs[0]], test[pairs[1]], steps=10), path)


def run_data_config(run: Path, meta: dict[str, Any]) -> DataConfig:
    """How a run read its dataset (config.json's data_config; the defaults for runs of vaekit 0.1)."""
    if "data_config" not in meta:
        return DataConfig()
    return _config_section(run, meta, "data_config", DataConfig)


def run_image_shape(run: Path, meta: dict[str, Any]) -> tuple[int, int, int]:
    """The [C, H, W] a run was trained on: data.image_shape, or [1, S, S] from data.image_size (runs of vaekit 0.1)."""
    try:
        data = meta.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError(f"data must be a JSON object, got {type(data).__name__}")
        shape = data.get("image_shape")
        if shape is None:
            size = data.get("image_size", 28)
            shape = [1, size, size]
        if not isinstance(shape, list) or len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
            raise ValueError(f"data.image_shape must be [C, H, W] of positive ints, got {shape!r}")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run / 'config.json'} is not a vaekit run config: {e}") from None
    return tuple(shape)  # type: ignore[return-value]


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[VAE, dict[str, Any]]:
    """Load a run folder's model (on ``device``) and its config.json; CheckpointError if anything is off.

    The model is rebuilt from config.json (the architecture and its options, the likelihood,
    the posterior and the data's image shape), then its weights are loaded, after checking
    every name and shape against model.safetensors.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist or is not a folder")
    meta = read_json(run / "config.json")
    model_cfg = _config_section(run, meta, "model", ModelConfig)
    image_shape = run_image_shape(run, meta)
    tensors, _ = load_weights(run / "model.safetensors")
    try:
        with torch.device("meta"):  # shapes only: a bad config allocates nothing
            expected = {k: v.shape for k, v in build_model(model_cfg, image_shape).state_dict().items()}
    except ValueError as e:
        raise CheckpointError(f"{run / 'config.json'}: cannot rebuild its model: {e}") from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    what = f"the model in config.json (arch {resolve_arch(model_cfg, image_shape)}, latent_dim={model_cfg.latent_dim}, image shape {list(image_shape)})"
    if missing or unexpected:
        raise CheckpointError(
            f"{run / 'model.safetensors'} does not match {what}: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    for key, t in tensors.items():
        if t.shape != expected[key]:
            raise CheckpointError(
                f"{run / 'model.safetensors'}: {key} has shape {list(t.shape)}, expected {list(expected[key])} for {what}"
            )
    model = build_model(model_cfg, image_shape)
    model.load_state_dict(tensors)
    return model.to(resolve_device(device)), meta


def sample_run(
    run_dir: str | Path, n: int = 64, seed: int = 0, out: str | Path | None = None, *, sampler: str = "prior", components: int = 10,
) -> Path:
    """Write a grid of ``n`` new images from a trained run; returns the PNG's path.

    ``sampler="prior"``: z ~ N(0, I) (default file ``RUN_DIR/samples_seedS.png``).
    ``sampler="gmm"``: z from a Gaussian mixture of ``components`` components fitted to the
    training set's posterior means (two-stage sampling; ``fit_run_gmm``), default file
    ``RUN_DIR/samples_gmm.png``; the run's report is then rewritten to show it.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    model, _ = load_run(run_dir)
    if sampler == "prior":
        path = Path(out) if out is not None else Path(run_dir) / f"samples_seed{seed}.png"
        set_seed(seed)
        plot_samples(generate_images(model, n_images=n), path, title=f"{n} samples from the prior (seed {seed})")
        return path
    gmm, _ = fit_run_gmm(run_dir, components=components, model=model)
    path = Path(out) if out is not None else Path(run_dir) / GMM_SAMPLES
    plot_samples(gmm_images(model, gmm, n, seed), path, title=f"{n} samples from the GMM ({components} components, seed {seed})")
    if out is None:
        report_run(run_dir, model=model)
    return path


SAMPLERS = ("prior", "gmm")
GMM_FILE = "gmm.safetensors"
GMM_JSON = "gmm.json"
GMM_SAMPLES = "samples_gmm.png"
GMM_FIT_SEED = 0


@torch.no_grad()
def gmm_images(model: VAE, gmm: GMM, n: int, seed: int) -> torch.Tensor:
    """Mean images [n, C, H, W] decoded from n draws of the mixture (seeded)."""
    device, dtype = param_device(model)
    z = gmm.sample(n, torch.Generator().manual_seed(seed)).to(device, dtype)  # [n, K]
    with eval_mode(model):
        return model.mean_image(z[:, None, :])[:, 0].float().cpu()


def fit_run_gmm(run_dir: str | Path, components: int = 10, *, model: VAE | None = None) -> tuple[GMM, dict[str, Any]]:
    """The run's GMM on the training set's posterior means, and its held-out numbers.

    Reuses ``RUN_DIR/gmm.safetensors`` when it has ``components`` components; else fits one
    (seed 0) and saves it. Writes ``RUN_DIR/gmm.json``: the mean log-density (nats per point)
    of the **test** set's posterior means under the GMM and under the prior N(0, I).
    """
    run = Path(run_dir)
    if model is None:
        model, meta = load_run(run)
    else:
        meta = read_json(run / "config.json")
    train_cfg = _config_section(run, meta, "train", TrainConfig)
    data = load_dataset(train_cfg.dataset, config=run_data_config(run, meta), progress=False)
    gmm = None
    if (run / GMM_FILE).exists():
        try:
            old = load_gmm(run / GMM_FILE)
            if old.components == components and old.dim == model.K:
                gmm = old
        except CheckpointError:
            gmm = None  # refit and overwrite
    if gmm is None:
        train_means = posterior_means(model, split_images(data, train_cfg, "train"))  # [N, K]
        gmm = fit_gmm(train_means, components=components, seed=GMM_FIT_SEED)
        save_gmm(run / GMM_FILE, gmm)
    test_means = posterior_means(model, split_images(data, train_cfg, "test"))  # [M, K]
    info = {
        **gmm.info,
        "components": gmm.components,
        "latent_dim": gmm.dim,
        "test_points": int(test_means.shape[0]),
        "test_loglik_gmm": float(gmm.log_prob(test_means).mean()),
        "test_loglik_prior": float(standard_normal_log_prob(test_means).mean()),
        "unit": "nats per point (mean log-density of the test set's posterior means)",
    }
    atomic_write_text(run / GMM_JSON, json.dumps(info, indent=2) + "\n")
    return gmm, info


def report_run(
    run_dir: str | Path, out: str | Path | None = None, *, model: VAE | None = None, data: ImageData | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the run's report with the latent explorer (``vaekit.explorer``); returns its path.

    The explorer gets the test set's posterior means and labels, and the run's GMM if
    ``gmm.safetensors`` exists. ``model`` and ``data``, when the caller holds them (training
    has just ended), save loading them again. Anything that keeps the explorer from being
    built is shown as a note in its place; the rest of the report is written regardless.
    ``notes``: figures that were skipped and why (``write_run_figures``), shown with the figures.
    """
    run = Path(run_dir)
    try:
        if model is None:
            model, meta = load_run(run)
        else:
            meta = read_json(run / "config.json")
        train_cfg = _config_section(run, meta, "train", TrainConfig)
        if data is None:
            data = load_dataset(train_cfg.dataset, config=run_data_config(run, meta), progress=False)
        means = posterior_means(model, split_images(data, train_cfg, "test"))  # [M, K]
        gmm = None
        if (run / GMM_FILE).exists():
            try:
                gmm = load_gmm(run / GMM_FILE)
            except CheckpointError:
                gmm = None  # gmm.json / the samples still show; the explorer just has no GMM button
        labels = data.test_labels if data.info.labelled else None
        panel = explorer_html(model, means, labels, gmm=gmm)
    except Exception as e:  # never lose the report over the explorer; say why it is missing
        panel = explorer_note(f"{type(e).__name__}: {e}")
    return write_report(run, out, explorer_html=panel, notes=notes)


def eval_run(
    run_dir: str | Path,
    *,
    k: int = 1000,
    split: str = "test",
    limit: int | None = None,
    n_samples: int = 10,
    batch_size: int = 500,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    save: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on its dataset's ``split`` (the first ``limit`` images, or all).

    Returns ``vaekit.evaluate``'s numbers plus ``split``, ``seconds`` and ``note`` (what the
    log-likelihood means), and with ``save`` writes them to ``RUN_DIR/eval_{split}.json``.

    ``precision`` (auto, fp32, bf16; default: the run's own) is resolved for the evaluation
    device by ``config.resolve_precision``: the networks run in bf16 only where auto or the
    run chose it (tests/test_evaluation.py checks that bf16 agrees with fp32 within the SE).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    run = Path(run_dir)
    model, meta = load_run(run, device=device)
    train_cfg = _config_section(run, meta, "train", TrainConfig)
    if param_device(model)[0].type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)  # faster convolutions, same numbers
    data = load_dataset(train_cfg.dataset, config=run_data_config(run, meta), progress=False)
    images = split_images(data, train_cfg, split)
    images = images[:limit] if limit is not None else images
    t0 = time.perf_counter()
    autocast_dtype, _ = resolve_precision(precision or train_cfg.precision, param_device(model)[0])
    result = evaluate(
        model, images, k=k, n_samples=n_samples, batch_size=batch_size, seed=seed, progress=progress, autocast_dtype=autocast_dtype,
    )
    result = {
        "split": split, **result, "seconds": time.perf_counter() - t0, "device": str(param_device(model)[0]),
        "precision": "bf16" if autocast_dtype is not None else "fp32",
    }
    # how fast the estimate ran: decoder passes per second, and its FLOP rate against this machine's matmul rate
    dec_flops = flops_per_image(model.decoder, torch.zeros(1, model.latent_dim))
    result["decodes_per_s"] = result["decodes"] / max(result["log_likelihood_seconds"], 1e-9)
    result["decoder_gflops"] = result["decodes_per_s"] * dec_flops / 1e9
    result["matmul_peak_gflops"] = matmul_peak_gflops(device=param_device(model)[0], dtype=autocast_dtype or torch.float32)
    result["note"] = LIKELIHOOD_NOTE
    if "bits_per_dim_8bit" in result:
        result["dequantization_note"] = DEQUANTIZATION_NOTE
    if save:
        atomic_write_text(run / f"eval_{split}.json", json.dumps(result, indent=2) + "\n")
    return result


def figures_run(run_dir: str | Path, device: str = "cpu") -> list[Path]:
    """(Re)draw a finished run's figures and report from its files; returns the paths written."""
    run = Path(run_dir)
    model, meta = load_run(run, device=device)
    train_cfg = _config_section(run, meta, "train", TrainConfig)
    data = load_dataset(train_cfg.dataset, config=run_data_config(run, meta), progress=False)
    dist_meta = meta.get("distributed")
    global_batch = dist_meta.get("global_batch_size") if isinstance(dist_meta, dict) else None
    batch_elbos = None
    if (run / CHECKPOINT).exists():
        _, state, _ = load_checkpoint(run)
        batch_elbos = state.elbos.tolist()
    rows = [r for r in read_metrics(run / "metrics.jsonl")[0] if "steps" in r and "train_elbo" in r]  # the curve's points
    notes: list[str] = []
    written = write_run_figures(
        model, data, train_cfg, run, rows, batch_elbos, global_batch=global_batch if isinstance(global_batch, int) and global_batch > 0 else None,
        notes=notes,
    )
    written.append(report_run(run, model=model, data=data, notes=notes))
    return written
