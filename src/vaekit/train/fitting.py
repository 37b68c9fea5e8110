"""``fit``: train a model on images as a ``TrainConfig`` says, with hooks for a run folder."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor

from .. import distributed
from ..checkpoint import TrainState
from ..config import TrainConfig, validate
from .callbacks import EpochEndFunction
from .checkpoints import Checkpoints
from .loop import FitResult, TrainLoop
from .progress import Progress

__all__ = ["fit", "EpochHook", "CheckpointHook"]

EpochHook = Callable[[int, dict[str, Any]], None]
CheckpointHook = Callable[[TrainState], None]


def fit(
    model: Any,
    images: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    resume: TrainState | None = None,
    log_every: int = 10,
    callbacks: Sequence[Any] = (),
    labels: Tensor | None = None,
) -> FitResult:
    """Train ``model`` on ``images`` [N, C, H, W] as ``cfg`` says; the model and data follow cfg.device.

    ``images`` are floats in [0, 1] or uint8 pixels (kept uint8 on the device and made float
    one batch at a time), or a ``data.NpyRows`` for data larger than memory (read from
    disk a batch at a time). The objective is ``cfg.objective`` (``objectives.OBJECTIVES``) with
    the KL weight ``kl_beta(cfg, step)``; the per-step "ELBO" recorded is always the true
    bound (beta = 1), and a different training objective is recorded beside it, as are the
    objective's own terms (``Terms.extra``). ``cfg.grad_normalize`` divides each parameter's gradient by
    its norm, ``cfg.grad_clip`` clips the global gradient norm.

    Hooks (their time is not counted as training time, nor against ``cfg.time_budget``):

    * ``on_epoch_end(epoch, stats)`` after every epoch (also a partial last one), with
      ``train_elbo`` (mean per-step ELBO, nats per image), ``sigma_x``, ``steps``,
      ``skipped`` and ``seconds`` (training time so far), ``train_objective`` when
      the objective is not the ELBO, ``train_<name>`` for each of the objective's own terms,
      ``final`` (the run's last epoch: the epochs, the step limit or the time budget end here)
      and ``precision`` ("fp32" or "bf16");
    * ``on_checkpoint(state)`` after each epoch's ``on_epoch_end``, every
      ``cfg.checkpoint_every`` steps, when SIGINT/SIGTERM arrives (then ``fit`` raises
      ``TrainingInterrupted``) and once at the end (``state.finished``): see ``checkpoints.Checkpoints``;
    * ``callbacks``: ``callbacks.Callback`` objects (e.g. ``monitor.Monitor``, ``tensorboard.TensorBoard``),
      called after the progress bars and before ``on_epoch_end`` and ``on_checkpoint``.

    ``resume`` continues from a saved ``TrainState`` (the model must hold its weights):
    the result is bit-identical to a run that was never interrupted on the same device (on a
    GPU, training sets cuDNN to its deterministic algorithms for this), as long as no time
    budget is set (a budget makes the stopping point depend on the clock).

    ``cfg.precision`` (``config.resolve_precision``): "bf16" runs the networks under bf16
    autocast, "auto" does so only where the device computes bf16 natively; the objective's
    terms, the gradients, Adam's state and the weights are float32 in every mode.

    ``labels`` [N]: the images' labels, for a conditional model (``vaekit.conditions``) made from them: each
    step holds the condition of its images (and every process its shard's) while the objective runs.

    A NaN or Inf loss or gradient raises ``NonFiniteError`` naming the epoch, step and
    quantity, unless ``cfg.skip_nonfinite``, which skips the batch and counts it.

    Data-parallel: when this process is part of a process group (``vaekit.distributed``,
    started by torchrun), the model trains under DistributedDataParallel. ``cfg.batch_size``
    is per process; global step i uses ``perm[i*Bg:(i+1)*Bg]`` (Bg = batch_size x world size)
    of the same per-epoch order, each process its contiguous slice, and the processes together
    take exactly the step one process takes with batch Bg (same noise, same gradient, up to
    rounding). Losses, non-finite flags, signals and the clock are all-reduced, so every
    process stops, skips and checkpoints at the same step. Every process calls the hooks.
    """
    validate(cfg)
    every: list[Any] = [Progress(log_every)] if progress and distributed.is_main() else []
    every += list(callbacks)
    if on_epoch_end is not None:
        every.append(EpochEndFunction(on_epoch_end))
    if on_checkpoint is not None:
        every.append(Checkpoints(on_checkpoint, cfg.checkpoint_every))
    return TrainLoop(model, images, cfg, callbacks=every, resume=resume, log_every=log_every, labels=labels).run()
