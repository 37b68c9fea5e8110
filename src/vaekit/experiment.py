"""A training run as a folder: train, evaluate each epoch, save, and draw its figures.

A run folder holds::

    config.json        model and training configs, dataset, device, versions
    model.safetensors  the weights (state_dict of a SimpleVAE), rewritten each epoch
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

import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__, distributed
from .checkpoint import CheckpointError, atomic_write_text, load_weights, read_json, save_weights
from .config import ModelConfig, TrainConfig, config_from_dict, config_to_dict, resolve_device, validate
from .data import ImageData, binarize, load_dataset
from .evaluation import LIKELIHOOD_NOTE, evaluate, evaluate_elbo, seeded_rng
from .explorer import explorer_html
from .explorer import note_html as explorer_note
from .gmm import GMM, fit_gmm, load_gmm, save_gmm, standard_normal_log_prob
from .latents import interpolate, latent_grid, pca, posterior_means, reconstruct
from .model import SimpleVAE, eval_mode, generate_images, mean_image, param_device
from .plots import (
    image_grid, plot_elbo_curve, plot_interpolations, plot_latent_map, plot_latent_scatter, plot_reconstructions, plot_samples,
)
from .report import read_metrics, write_report
from .train import TrainState, fit, set_seed, state_from_tensors, state_to_tensors

__all__ = [
    "train_run", "load_run", "sample_run", "eval_run", "figures_run", "report_run", "write_run_figures",
    "save_checkpoint", "load_checkpoint", "build_model", "split_images", "RUN_FILES", "FIGURES",
]

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "vaekit.checkpoint/1"
FIGURES = ("elbo_curve.png", "samples.png", "reconstructions.png", "latent_map.png", "latent_scatter.png", "interpolations.png")
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", *FIGURES, "report.html", CHECKPOINT)


def build_model(model_cfg: ModelConfig, image_size: int = 28) -> SimpleVAE:
    """The SimpleVAE that ``model_cfg`` describes, for square images of side ``image_size``."""
    return SimpleVAE(
        K=model_cfg.latent_dim, num_filters=model_cfg.num_filters, image_size=image_size,
        likelihood=model_cfg.likelihood, posterior=model_cfg.posterior,
    )


def split_images(data: ImageData, train_cfg: TrainConfig, split: str = "test") -> torch.Tensor:
    """The images a run is measured on: ``split`` ("train" or "test"), binarized as the run was trained.

    With ``binarize`` "dynamic" or "static" the split is drawn once with the fixed seed
    ``data.BINARIZE_SEED``, so every evaluation sees the same binary images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = data.train_images if split == "train" else data.test_images
    return binarize(images) if train_cfg.binarize != "none" else images


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


def save_checkpoint(out: Path, model: SimpleVAE, state: TrainState, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write checkpoint.safetensors (model, optimizer, RNG, position, config, metrics), then
    the files people read (model.safetensors, metrics.jsonl), each atomically.

    The checkpoint is the source of truth: a crash between the writes is repaired on resume.
    """
    tensors, info = state_to_tensors(state)
    tensors.update({f"model/{k}": v for k, v in model.state_dict().items()})
    info.update(format=CHECKPOINT_FORMAT, config=meta, metrics=rows)
    save_weights(out / CHECKPOINT, tensors, {"vaekit": json.dumps(info)})
    save_weights(out / "model.safetensors", model.state_dict(), {"format": "vaekit.SimpleVAE"})
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def load_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], TrainState, list[dict[str, Any]]]:
    """Read a run's checkpoint: (model state_dict, TrainState, metrics rows); CheckpointError if unusable."""
    path = out / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"nothing to resume: {path} does not exist (was the run started by vaekit train?)")
    tensors, header = load_weights(path)
    try:
        info = json.loads(header["vaekit"])
        if info.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        state = state_from_tensors(tensors, info)
        rows = list(info["metrics"])
        if not (0 <= state.epoch_start_step <= state.step == len(state.elbos)):
            raise ValueError(f"inconsistent position: step {state.step}, {len(state.elbos)} ELBO values, epoch start {state.epoch_start_step}")
        if state.rng["torch"].shape != torch.get_rng_state().shape:
            raise ValueError(f"rng/torch has shape {list(state.rng['torch'].shape)}, expected {list(torch.get_rng_state().shape)}")
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a vaekit checkpoint: {type(e).__name__}: {e}") from None
    model_sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    return model_sd, state, rows


def train_run(
    model_cfg: ModelConfig | None,
    train_cfg: TrainConfig | None,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    device: str | None = None,
) -> Path:
    """Train a SimpleVAE as configured and write the run folder ``out_dir``; returns its path.

    With ``resume=True`` the configs come from ``out_dir/config.json`` (pass None) and
    training continues from ``out_dir/checkpoint.safetensors``; ``device`` may move it.
    """
    out = Path(out_dir)
    state, rows, model_sd = None, [], None
    dist_info = distributed.current()
    world = 1 if dist_info is None else dist_info.world_size
    main = dist_info is None or dist_info.is_main  # the only process that writes files
    if resume:
        if not out.is_dir():
            raise CheckpointError(f"cannot resume: run folder {out} does not exist")
        meta = read_json(out / "config.json")
        model_cfg = _config_section(out, meta, "model", ModelConfig)
        train_cfg = _config_section(out, meta, "train", TrainConfig)
        if device is not None:
            train_cfg.device = device
        model_sd, state, rows = load_checkpoint(out)
        if state.finished and main:
            print(f"the run in {out} already finished ({state.step} steps); nothing to resume")
    else:
        assert model_cfg is not None and train_cfg is not None
        validate(model_cfg)
        validate(train_cfg)
    device = resolve_device(train_cfg.device)  # fail early on an unavailable device
    if not resume:
        distributed.run_on_main(lambda: _refuse_existing_out_dir(out, overwrite))  # before the data is loaded

    data = load_dataset(train_cfg.dataset)
    global_batch = train_cfg.batch_size * world
    if global_batch > len(data.train_images):
        per_rank = f" (global batch {global_batch} = batch_size x {world} processes)" if world > 1 else ""
        raise ValueError(f"batch_size={train_cfg.batch_size}{per_rank} is larger than the {len(data.train_images)} training images of {data.name}")
    if not resume:

        def make_out_dir() -> None:
            _make_out_dir(out)
            (out / CHECKPOINT).unlink(missing_ok=True)  # --overwrite: never resume an older run's state

        distributed.run_on_main(make_out_dir)
    image_size = data.train_images.shape[-1]
    test_images = split_images(data, train_cfg, "test")
    tensorboard = _tensorboard_writer(out) if train_cfg.tensorboard and main else None
    set_seed(train_cfg.seed)
    model = build_model(model_cfg, image_size)
    if resume:
        try:
            model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise CheckpointError(f"{out / CHECKPOINT}: the model weights do not fit config.json: {e}") from None
    else:
        meta = {
            "vaekit_version": __version__,
            "model": config_to_dict(model_cfg),
            "train": config_to_dict(train_cfg),
            "data": {"name": data.name, "image_size": image_size, "train_images": len(data.train_images), "test_images": len(data.test_images)},
            "device": str(device),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if dist_info is not None:
            meta["distributed"] = {"world_size": world, "backend": dist_info.backend, "global_batch_size": global_batch}
        if main:
            atomic_write_text(out / "config.json", json.dumps(meta, indent=2) + "\n")

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        test = evaluate_elbo(model, test_images, n_samples=train_cfg.eval_samples, seed=train_cfg.seed, sharded=True)
        rows.append({
            "epoch": epoch + 1,
            "steps": stats["steps"],
            "train_elbo": stats["train_elbo"],
            "test_elbo": test["elbo"],
            "test_elbo_se": test["elbo_se"],
            "test_rec": test["rec"],
            "test_kl": test["kl"],
            "sigma_x": stats["sigma_x"] if model_cfg.likelihood == "gaussian" else None,
            "skipped_nonfinite": stats["skipped"],
            "seconds": stats["seconds"],
        })
        if tensorboard is not None:
            _tensorboard_epoch(tensorboard, model, rows[-1], train_cfg.seed)

    def on_checkpoint(st: TrainState) -> None:
        if main:  # the other ranks hold the same state; they go on and wait at the next collective
            save_checkpoint(out, model, st, rows, meta)

    if state is not None and state.finished:  # only the figures may be missing (killed while drawing)
        batch_elbos = state.elbos.tolist()
    else:
        result = fit(
            model, data.train_images, train_cfg, progress=progress,
            on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint, resume=state,
        )
        batch_elbos = result.batch_elbos

    if tensorboard is not None:
        tensorboard.close()
    if not main:
        return out
    write_run_figures(model, data, train_cfg, out, rows, batch_elbos, global_batch=global_batch)
    report_run(out)
    return out


def write_run_figures(
    model: SimpleVAE, data: ImageData, train_cfg: TrainConfig, out: Path, rows: list[dict[str, Any]], batch_elbos: list[float] | None,
    global_batch: int | None = None,
) -> list[Path]:
    """Draw a run's figures into ``out``; returns their paths.

    elbo_curve.png (per-step train ELBO, per-epoch train and test; skipped without a
    history), samples.png (64 draws from the prior), reconstructions.png (16 test images
    and their reconstructions), latent_map.png (decoded grid: the prior's quantiles for
    K=2, the two principal directions of the test posterior means for K>2),
    latent_scatter.png (test posterior means coloured by label, PCA for K>2) and
    interpolations.png (8 pairs of test images, 10 steps). Deterministic given the seed.
    ``global_batch``: images per optimizer step (batch_size x processes; default batch_size).
    """
    device = next(model.parameters()).device
    test = split_images(data, train_cfg, "test")
    written = []
    if batch_elbos:
        steps_per_epoch = math.ceil(len(data.train_images) / (global_batch or train_cfg.batch_size))
        plot_elbo_curve(batch_elbos, out / "elbo_curve.png", rows, steps_per_epoch)
        written.append(out / "elbo_curve.png")
    with seeded_rng(train_cfg.seed, device):
        plot_samples(generate_images(model, n_images=64), out / "samples.png")
        order = torch.randperm(len(test))  # [M] which test images to show
    shown = test[order[:16]]  # [16, 1, H, W]
    plot_reconstructions(shown, reconstruct(model, shown), out / "reconstructions.png")
    means = posterior_means(model, test)  # [M, K]
    grid, what = latent_grid(model, n=15, means=means)
    plot_latent_map(grid, out / "latent_map.png", what)
    k = means.shape[1]
    if k == 2:
        points, axes, title = means, ("E[z_0|x]", "E[z_1|x]"), f"posterior means of the {len(test)} test images"
    else:
        center, dirs, _ = pca(means, 2)
        points = (means - center) @ dirs.T  # [M, 2]
        axes, title = ("PC 1", "PC 2"), f"posterior means of the {len(test)} test images (PCA of K={k})"
    plot_latent_scatter(points, data.test_labels, out / "latent_scatter.png", axes, title)
    pairs = order[16:32].reshape(2, 8)  # 8 pairs of other test images
    plot_interpolations(interpolate(model, test[pairs[0]], test[pairs[1]], steps=10), out / "interpolations.png")
    written += [out / n for n in ("samples.png", "reconstructions.png", "latent_map.png", "latent_scatter.png", "interpolations.png")]
    return written


def _tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(f"--tensorboard needs the tensorboard package (pip install 'vaekit[tensorboard]'): {e}") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _tensorboard_epoch(writer: Any, model: SimpleVAE, row: dict[str, Any], seed: int) -> None:
    """Scalars (ELBOs, sigma_x) and a grid of samples for one epoch."""
    step = row["epoch"]
    for key in ("train_elbo", "test_elbo", "test_rec", "test_kl", "sigma_x"):
        if row.get(key) is not None:
            writer.add_scalar(f"elbo/{key}" if "elbo" in key else f"terms/{key}", row[key], step)
    with seeded_rng(seed, next(model.parameters()).device):
        images = generate_images(model, n_images=64).clamp(0, 1).cpu()  # [64, 1, H, W]
    writer.add_image("samples", image_grid(images)[None], step, dataformats="CHW")
    writer.flush()


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[SimpleVAE, dict[str, Any]]:
    """Load a run folder's model (on ``device``) and its config.json; CheckpointError if anything is off."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist or is not a folder")
    meta = read_json(run / "config.json")
    model_cfg = _config_section(run, meta, "model", ModelConfig)
    try:
        data = meta.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError(f"data must be a JSON object, got {type(data).__name__}")
        image_size = data.get("image_size", 28)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 9:
            raise ValueError(f"data.image_size must be an int >= 9, got {image_size!r}")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run / 'config.json'} is not a vaekit run config: {e}") from None
    tensors, _ = load_weights(run / "model.safetensors")
    # check the sizes against the weights before building anything (no huge allocation from a bad config)
    k, f, s = model_cfg.latent_dim, model_cfg.num_filters, image_size - 8
    want = (f * s * s, k)
    got = tuple(tensors["decoder.0.weight"].shape) if "decoder.0.weight" in tensors else None
    if got != want:
        raise CheckpointError(
            f"{run / 'model.safetensors'}: decoder.0.weight has shape {list(got) if got else 'none (missing)'}, "
            f"expected {list(want)} for the model in config.json (latent_dim={k}, num_filters={f}, image_size={image_size})"
        )
    model = build_model(model_cfg, image_size)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{run / 'model.safetensors'} does not match the SimpleVAE in config.json: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    for key, t in tensors.items():
        if t.shape != expected[key].shape:
            raise CheckpointError(
                f"{run / 'model.safetensors'}: {key} has shape {list(t.shape)}, "
                f"expected {list(expected[key].shape)} for the model in config.json"
            )
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
        report_run(run_dir)
    return path


SAMPLERS = ("prior", "gmm")
GMM_FILE = "gmm.safetensors"
GMM_JSON = "gmm.json"
GMM_SAMPLES = "samples_gmm.png"
GMM_FIT_SEED = 0


@torch.no_grad()
def gmm_images(model: SimpleVAE, gmm: GMM, n: int, seed: int) -> torch.Tensor:
    """Mean images [n, C, H, W] decoded from n draws of the mixture (seeded)."""
    device, dtype = param_device(model)
    z = gmm.sample(n, torch.Generator().manual_seed(seed)).to(device, dtype)  # [n, K]
    with eval_mode(model):
        return mean_image(model, z[:, None, :])[:, 0].float().cpu()


def fit_run_gmm(run_dir: str | Path, components: int = 10, *, model: SimpleVAE | None = None) -> tuple[GMM, dict[str, Any]]:
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
    data = load_dataset(train_cfg.dataset)
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


def report_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report with the latent explorer (``vaekit.explorer``); returns its path.

    The explorer gets the test set's posterior means and labels, and the run's GMM if
    ``gmm.safetensors`` exists. Anything that keeps the explorer from being built is shown
    as a note in its place; the rest of the report is written regardless.
    """
    run = Path(run_dir)
    try:
        model, meta = load_run(run)
        train_cfg = _config_section(run, meta, "train", TrainConfig)
        data = load_dataset(train_cfg.dataset)
        means = posterior_means(model, split_images(data, train_cfg, "test"))  # [M, K]
        gmm = None
        if (run / GMM_FILE).exists():
            try:
                gmm = load_gmm(run / GMM_FILE)
            except CheckpointError:
                gmm = None  # gmm.json / the samples still show; the explorer just has no GMM button
        panel = explorer_html(model, means, data.test_labels, gmm=gmm)
    except Exception as e:  # never lose the report over the explorer; say why it is missing
        panel = explorer_note(f"{type(e).__name__}: {e}")
    return write_report(run, out, explorer_html=panel)


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
) -> dict[str, Any]:
    """Evaluate a trained run on its dataset's ``split`` (the first ``limit`` images, or all).

    Returns ``vaekit.evaluate``'s numbers plus ``split``, ``seconds`` and ``note`` (what the
    log-likelihood means), and with ``save`` writes them to ``RUN_DIR/eval_{split}.json``.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    run = Path(run_dir)
    model, meta = load_run(run, device=device)
    train_cfg = _config_section(run, meta, "train", TrainConfig)
    if model.decoder[3].weight.device.type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)  # faster convolutions, same numbers
    data = load_dataset(train_cfg.dataset)
    images = split_images(data, train_cfg, split)[:limit]
    t0 = time.perf_counter()
    result = evaluate(model, images, k=k, n_samples=n_samples, batch_size=batch_size, seed=seed, progress=progress)
    result = {"split": split, **result, "seconds": time.perf_counter() - t0, "device": str(next(model.parameters()).device)}
    result["note"] = LIKELIHOOD_NOTE
    if save:
        atomic_write_text(run / f"eval_{split}.json", json.dumps(result, indent=2) + "\n")
    return result


def figures_run(run_dir: str | Path, device: str = "cpu") -> list[Path]:
    """(Re)draw a finished run's figures and report from its files; returns the paths written."""
    run = Path(run_dir)
    model, meta = load_run(run, device=device)
    train_cfg = _config_section(run, meta, "train", TrainConfig)
    data = load_dataset(train_cfg.dataset)
    dist_meta = meta.get("distributed")
    global_batch = dist_meta.get("global_batch_size") if isinstance(dist_meta, dict) else None
    batch_elbos = None
    if (run / CHECKPOINT).exists():
        _, state, _ = load_checkpoint(run)
        batch_elbos = state.elbos.tolist()
    rows = [r for r in read_metrics(run / "metrics.jsonl")[0] if "steps" in r and "train_elbo" in r]  # the curve's points
    written = write_run_figures(
        model, data, train_cfg, run, rows, batch_elbos, global_batch=global_batch if isinstance(global_batch, int) and global_batch > 0 else None,
    )
    written.append(report_run(run))
    return written
