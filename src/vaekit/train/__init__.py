"""Training: ``fit`` and the assignment's ``train_vae``, over a loop of collaborators, one module each.

    fitting.py      fit: validates the config, assembles the callbacks, runs the loop
    assignment.py   train_vae: the assignment's signature on top of fit
    loop.py         TrainLoop (run -> run_epoch -> run_step -> forward_backward), FitResult
    runtime.py      Runtime: device, threads, cuDNN determinism, precision, DDP, torch.compile; Adam;
                    TrainingModule (model + objective as one module); set_seed, configure_threads
    batches.py      BatchSource: the images on the device or streamed, the order of each epoch from
                    (seed, epoch), binarization, this process's shard; as_image_tensor
    stop.py         StopPolicy (step limit, time budget, SIGINT/SIGTERM, agreed across processes),
                    Clock (training time), TrainingInterrupted
    guard.py        NonFiniteGuard (per-step flags, checked every step on the CPU, lazily on
                    accelerators; skip_nonfinite), NonFiniteError
    history.py      History: per-step ELBO, training objective, the objective's own terms
    schedules.py    lr_factor, lr_warmup_factor, LearningRate, kl_beta
    updates.py      UpdateHook around each optimizer step; GradNormalize (--grad-normalize), GradClip (--grad-clip)
    callbacks.py    the Callback protocol; a plain function at epoch ends
    checkpoints.py  Checkpoints: when a checkpoint is written (every N steps, epoch ends, signals, the end)
    progress.py     Progress: tqdm bars
    monitor.py      Monitor: the per-epoch test ELBO and metrics row; TensorBoard, which logs the rows

The position (step, epoch, batch, ...) is ``checkpoint.Position``, which the checkpoint's
``TrainState`` extends: the trainer and the checkpoint share its fields.
"""

from .assignment import train_vae
from .batches import as_image_tensor
from .fitting import fit
from .guard import NonFiniteError
from .loop import FitResult, TrainLoop
from .monitor import Monitor, TensorBoard
from .runtime import TrainingModule, configure_threads, set_seed
from .schedules import kl_beta, lr_factor, lr_warmup_factor
from .stop import TrainingInterrupted

__all__ = [
    "train_vae", "fit", "FitResult", "TrainLoop", "Monitor", "TensorBoard", "TrainingModule", "NonFiniteError", "TrainingInterrupted",
    "set_seed", "as_image_tensor", "configure_threads", "kl_beta", "lr_factor", "lr_warmup_factor",
]
