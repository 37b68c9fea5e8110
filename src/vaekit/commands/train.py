"""``vaekit train``: train a VAE as configured and write its run folder (``vaekit.runfolder``).

Data-parallel (under torchrun): every rank trains and evaluates its share, only rank 0
writes files; resuming reads the run folder on every rank (on several machines it must
be on a filesystem they share).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import distributed
from ..checkpoint import CHECKPOINT, CheckpointError, RunLock, TrainState, load_checkpoint, remove_stale_temp_files, save_checkpoint
from ..config import DataConfig, ModelConfig, TrainConfig, resolve_device, resolve_precision, validate
from ..data import check_min_images, load_dataset
from ..model import build_model, describe_model
from ..runfolder import RUN_FILES, RunFolder, run_meta, split_images, training_images
from ..train import Monitor, TensorBoard, fit, set_seed
from .figures import InterimFigures, write_figures_and_report

__all__ = ["train_run", "fit_batch_to_data"]


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
    run = RunFolder(out)
    meta, model_cfg, train_cfg, data_cfg = run.meta, run.model_config(), run.train_config(), run.data_config()
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
    model_cfg = model_cfg.resolved(image_shape, data)  # the arch (and a condition's classes) in config.json: load_run rebuilds the same
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
            removed = RunFolder(out).remove_derived_files()  # nor show the older model's evaluations and samples
            if removed:
                print(f"note: --overwrite removed {len(removed)} file{'s' * (len(removed) > 1)} derived from the older model in {out} "
                      f"({', '.join(p.name for p in removed[:4])}{', ...' if len(removed) > 4 else ''})", flush=True)

        distributed.run_on_main(make_out_dir)
    test_images = split_images(data, train_cfg, "test")
    tensorboard = TensorBoard(out / "tensorboard", model, rows, train_cfg.seed) if train_cfg.tensorboard and main else None
    if resume:
        try:
            model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise CheckpointError(f"{out / CHECKPOINT}: the model weights do not fit config.json: {e}") from None
    else:
        meta = run_meta(model_cfg, train_cfg, data_cfg, data, train_device, (precision, why), notes)
        if dist_info is not None:
            meta["distributed"] = {"world_size": world, "backend": dist_info.backend, "global_batch_size": global_batch}
        if main:
            RunFolder(out).write_config(meta)

    conditional = getattr(model, "condition", None) is not None  # a conditional model sees each image's label
    test_labels = data.test_labels if conditional else None
    monitor = Timed(Monitor(model, train_cfg, test_images, rows, test_labels))
    interim = Timed(InterimFigures(RunFolder(out), model, data, train_cfg.seed, rows)) if main else None
    callbacks = [monitor, *([tensorboard] if tensorboard is not None else []), *([interim] if interim is not None else [])]
    t_fit = time.perf_counter()

    def on_checkpoint(st: TrainState) -> None:
        if main:  # the other ranks hold the same state; they go on and wait at the next collective
            save_checkpoint(out, model.state_dict(), st, rows, meta)

    if state is not None and state.finished:  # only the figures may be missing (killed while drawing)
        batch_elbos = state.elbos.tolist()
    else:
        result = fit(
            model, training_images(data), train_cfg, progress=progress,
            callbacks=callbacks, on_checkpoint=on_checkpoint, resume=state, labels=data.train_labels if conditional else None,
        )
        batch_elbos = result.batch_elbos

    t_fit = time.perf_counter() - t_fit
    if tensorboard is not None:
        tensorboard.close()
    if not main:
        return out
    # the model and metrics are saved; no figure may keep the report from being written
    _, seconds = write_figures_and_report(model, data, train_cfg, out, rows, batch_elbos, global_batch=global_batch)
    extra = (monitor.seconds + (interim.seconds if interim else 0.0))
    print(f"time: training {t_fit - extra:.0f} s, test ELBO each epoch {monitor.seconds:.0f} s, samples and report after each "
          f"epoch {interim.seconds if interim else 0.0:.0f} s, figures {seconds['figures']:.0f} s, report {seconds['report']:.0f} s",
          flush=True)
    return out


class Timed:
    """A training callback (``vaekit.train.callbacks``) whose time at epoch ends is added up in ``seconds``."""

    def __init__(self, callback: Any):
        self.callback, self.seconds = callback, 0.0

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.callback.on_epoch_end(loop, epoch, stats)
        self.seconds += time.perf_counter() - t0
