"""Training: the assignment's ``train_vae`` and the fast loop behind it.

Speed without changing the math: the whole dataset is one tensor on the training
device, shuffled by index each epoch (no per-item loading); the per-step ELBO is
accumulated on the device and read back only every ``log_every`` steps (no per-step
host sync); Adam uses its fused or foreach kernels; every core gets a thread.
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .config import TrainConfig, resolve_device, validate
from .data import binarize
from .model import SimpleVAE

__all__ = [
    "train_vae", "fit", "FitResult", "TrainState", "NonFiniteError", "TrainingInterrupted",
    "set_seed", "as_image_tensor", "configure_threads", "capture_rng", "restore_rng",
    "state_to_tensors", "state_from_tensors",
]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device): the same seed gives the same CPU results."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(share: int = 1) -> int:
    """Give torch one intra-op thread per core this process may run on; returns the count.

    ``share``: processes on this machine sharing those cores (data-parallel ranks), each
    getting an equal part (at least one thread).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    n = max(1, n // max(1, share))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def as_image_tensor(dataset: Any, name: str = "dataset") -> Tensor:
    """Images as one float tensor [N, C, H, W] from a tensor or any Dataset of (image, label)."""
    if isinstance(dataset, Tensor):
        images = dataset
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        images = dataset.tensors[0]
    else:
        try:
            n = len(dataset)
            images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(n)])  # [N, C, H, W]
        except Exception as e:  # noqa: BLE001 - report what was passed
            raise TypeError(
                f"{name} must be an image tensor [N, 1, H, W] or a Dataset yielding (image [1, H, W], label); "
                f"reading it failed: {e}"
            ) from e
    if images.ndim != 4:
        raise ValueError(f"{name} must hold images of shape [N, 1, H, W], got shape {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must hold floating-point images in [0, 1], got dtype {images.dtype} "
            "(convert uint8 pixels with x.float() / 255)"
        )
    return images


def _make_adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused kernels exist for CUDA and, in recent torch, for CPU
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "cpu" or None)


@dataclass
class FitResult:
    """What ``fit`` did: per-step ELBO (nats per image, higher is better) and counts."""

    batch_elbos: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_done: int = 0
    seconds: float = 0.0
    skipped: int = 0  # batches skipped as non-finite (with skip_nonfinite)
    stopped_by: str = "epochs"  # "epochs", "max_steps" or "time_budget"


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped.

    Captured after a completed step: the next batch to train is batch ``batch`` of epoch
    ``epoch`` (0-based) of that epoch's data order, which depends only on (seed, epoch).
    """

    step: int  # optimizer steps done
    epoch: int  # the epoch in progress (0-based)
    batch: int  # batches of that epoch already consumed
    seconds: float  # training time so far
    skipped: int  # non-finite batches skipped so far
    elbos: Tensor  # [step] per-step ELBO so far, CPU
    optimizer: dict[str, Any]  # optimizer.state_dict()
    rng: dict[str, Any]  # capture_rng()
    epoch_start_step: int = 0  # `step` when the epoch in progress began
    epoch_start_skipped: int = 0  # `skipped` when the epoch in progress began
    finished: bool = False
    world_size: int = 1  # data-parallel processes that trained it (batch positions count global batches)


def capture_rng() -> dict[str, Any]:
    """The state of every random generator training touches: Python, NumPy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_to_tensors(state: TrainState) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Flatten a TrainState into tensors and a JSON-able dict (for safetensors: nothing pickled)."""
    tensors: dict[str, Tensor] = {"elbos": state.elbos, "rng/torch": state.rng["torch"]}
    for i, t in enumerate(state.rng.get("cuda", [])):
        tensors[f"rng/cuda/{i}"] = t
    np_name, np_keys, np_pos, np_has_gauss, np_cached = state.rng["numpy"]
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state.optimizer["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    meta = {
        "step": state.step, "epoch": state.epoch, "batch": state.batch, "seconds": state.seconds,
        "skipped": state.skipped, "finished": state.finished,
        "epoch_start_step": state.epoch_start_step, "epoch_start_skipped": state.epoch_start_skipped,
        "world_size": state.world_size, "param_groups": state.optimizer["param_groups"], "optim_scalars": scalars,
        "rng_python": [state.rng["python"][0], list(state.rng["python"][1]), state.rng["python"][2]],
        "rng_numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_cached)],
    }
    return tensors, meta


def state_from_tensors(tensors: dict[str, Tensor], meta: dict[str, Any]) -> TrainState:
    """Inverse of ``state_to_tensors``; raises KeyError/ValueError/TypeError on a malformed input."""
    optim_state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            optim_state.setdefault(int(idx), {})[key] = t
    for idx, values in meta["optim_scalars"].items():
        optim_state.setdefault(int(idx), {}).update(values)
    py = meta["rng_python"]
    np_name, np_pos, np_has_gauss, np_cached = meta["rng_numpy"]
    rng: dict[str, Any] = {
        "python": (int(py[0]), tuple(int(v) for v in py[1]), py[2]),
        "numpy": (np_name, tensors["rng/numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_cached),
        "torch": tensors["rng/torch"],
    }
    cuda = sorted((int(k.rsplit("/", 1)[1]), t) for k, t in tensors.items() if k.startswith("rng/cuda/"))
    if cuda:
        rng["cuda"] = [t for _, t in cuda]
    return TrainState(
        step=int(meta["step"]), epoch=int(meta["epoch"]), batch=int(meta["batch"]), seconds=float(meta["seconds"]),
        skipped=int(meta["skipped"]), elbos=tensors["elbos"], finished=bool(meta["finished"]),
        epoch_start_step=int(meta["epoch_start_step"]), epoch_start_skipped=int(meta["epoch_start_skipped"]),
        optimizer={"state": optim_state, "param_groups": meta["param_groups"]}, rng=rng,
        world_size=int(meta.get("world_size", 1)),
    )


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN or Inf; training stopped before saving anything from it."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


EpochHook = Callable[[int, dict[str, float]], None]
CheckpointHook = Callable[[TrainState], None]


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag checked between steps (a second SIGINT aborts at once)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


ANNEAL_FRACTION = 0.2  # "anneal": the last 20% of the run


def lr_factor(schedule: str, frac: float) -> float:
    """Multiplier of the base learning rate at ``frac`` in [0, 1] of the run.

    constant: 1. cosine: 0.5 (1 + cos(pi frac)). anneal: 1, then linear to 0 over the
    last ANNEAL_FRACTION of the run (a long constant phase, then a short decay).
    """
    frac = min(max(frac, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "anneal":
        return min(1.0, (1.0 - frac) / ANNEAL_FRACTION)
    return 1.0


def _restore_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    opt.load_state_dict(state)
    for group in opt.param_groups:  # keep each state tensor in its parameter's memory format
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    opt.state[p][key] = torch.empty_like(p).copy_(value)


class _ELBOStep(nn.Module):
    """``model.elbo_terms`` as a forward pass, so that DistributedDataParallel sees it (and syncs gradients)."""

    def __init__(self, model: SimpleVAE):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, n: int, calibrated: bool, shard: distributed.BatchShard) -> Any:
        return self.model.elbo_terms(x, n, calibrated, shard=shard)


def fit(
    model: SimpleVAE,
    images: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    resume: TrainState | None = None,
    log_every: int = 10,
) -> FitResult:
    """Train ``model`` on ``images`` [N, 1, H, W] as ``cfg`` says; the model and data follow cfg.device.

    Hooks (their time is not counted as training time, nor against ``cfg.time_budget``):

    * ``on_epoch_end(epoch, stats)`` after every epoch (also a partial last one), with
      ``train_elbo`` (mean per-step ELBO, nats per image), ``sigma_x``, ``steps``,
      ``skipped`` and ``seconds`` (training time so far);
    * ``on_checkpoint(state)`` after each epoch's ``on_epoch_end``, every
      ``cfg.checkpoint_every`` steps, when SIGINT/SIGTERM arrives (then ``fit`` raises
      ``TrainingInterrupted``) and once at the end (``state.finished``).

    ``resume`` continues from a saved ``TrainState`` (the model must hold its weights):
    on the CPU the result is bit-identical to a run that was never interrupted, as long
    as no time budget is set (a budget makes the stopping point depend on the clock).

    A NaN or Inf loss or gradient raises ``NonFiniteError`` naming the epoch, step and
    quantity, unless ``cfg.skip_nonfinite``, which skips the batch and counts it.

    Data-parallel: when this process is part of a process group (``vaekit.distributed``,
    started by torchrun), the model trains under DistributedDataParallel. ``cfg.batch_size``
    is per rank; global step i uses ``perm[i*Bg:(i+1)*Bg]`` (Bg = batch_size x world size)
    of the same per-epoch order, each rank its contiguous slice, and the ranks together
    take exactly the step one process takes with batch Bg (same noise, same gradient, up to
    rounding). Losses, non-finite flags, signals and the clock are all-reduced, so every
    rank stops, skips and checkpoints at the same step. Every rank calls the hooks.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    dist_info = distributed.current()  # None: one process, the code path of old
    world = 1 if dist_info is None else dist_info.world_size
    if dist_info is not None:
        progress = progress and dist_info.is_main
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (LOCAL_RANK)
    if device.type == "cpu":
        configure_threads(1 if dist_info is None else dist_info.local_world_size)
    images = as_image_tensor(images, "images").to(device=device, dtype=torch.float32)
    if cfg.binarize == "static":
        images = binarize(images)  # one fixed draw (data.BINARIZE_SEED)
    n_img = images.shape[0]
    if cfg.batch_size * world > n_img:
        per_rank = f" (global batch {cfg.batch_size * world} = batch_size x {world} processes)" if world > 1 else ""
        raise ValueError(f"batch_size={cfg.batch_size}{per_rank} is larger than the {n_img} training images")
    if resume is not None and resume.world_size != world:
        raise ValueError(
            f"the checkpoint was written by a run on {resume.world_size} process(es) and must be resumed on as many "
            f"(its batch positions count global batches), got {world}; e.g. torchrun --nproc-per-node={resume.world_size} -m vaekit train --resume RUN_DIR"
        )
    model.to(device)
    if device.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
        model.to(memory_format=torch.channels_last)
    model.train()
    step_fn = model.elbo_terms
    if dist_info is not None:
        # static_graph: the same parameters are used every step (log_sig_x not at all with calibrated=True)
        step_fn = torch.nn.parallel.DistributedDataParallel(
            _ELBOStep(model), device_ids=[device.index] if device.type == "cuda" else None, static_graph=True,
        )
    if cfg.compile:
        step_fn = torch.compile(step_fn)
    amp = cfg.amp and device.type == "cuda"
    opt = _make_adam(model, cfg.lr, device)
    params = [p for g in opt.param_groups for p in g["params"]]

    bs = cfg.batch_size * world  # the global batch
    steps_per_epoch = math.ceil(n_img / bs)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    budget_s = None if cfg.time_budget is None else 60.0 * cfg.time_budget
    elbos = torch.zeros(total, device=device)  # [steps] per-step ELBO, nats per image
    # non-finite flags per step (1: loss, 2: gradient), read every `check_every` steps: every
    # step on the CPU, where reading costs nothing; lazily on accelerators, to avoid host syncs
    bad = torch.zeros(total, dtype=torch.int8, device=device)
    check_every = 1 if device.type == "cpu" or cfg.skip_nonfinite else log_every
    checked = 0  # steps whose flags were read

    result = FitResult()
    step, first_epoch, first_batch, skipped, seconds0 = 0, 0, 0, 0, 0.0
    if resume is not None:
        step, first_epoch, first_batch = resume.step, resume.epoch, resume.batch
        skipped, seconds0 = resume.skipped, resume.seconds
        elbos[:step] = resume.elbos[:step].to(device)
        checked = step
        _restore_optimizer(opt, resume.optimizer)
        restore_rng(resume.rng)
    t_start = time.perf_counter() - seconds0  # moved forward by the time spent in hooks
    agreed_elapsed, agreed_signal = seconds0, None  # data-parallel: the clock and signals, as all ranks agree

    def agree(values: list[Tensor]) -> Tensor:
        """Sum over ranks of [*values, SIGINT seen, SIGTERM seen, elapsed s] (float64, on the device)."""
        sig = signals.received
        local = torch.tensor(
            [float(sig == signal.SIGINT), float(sig == signal.SIGTERM), time.perf_counter() - t_start], dtype=torch.float64,
        ).to(device, non_blocking=True)  # [3]
        if values:
            local = torch.cat([torch.stack(values).to(torch.float64), local])
        return distributed.all_reduce_sum(local)  # [len(values) + 3]

    def read_agreed(sums: Tensor) -> None:
        nonlocal agreed_elapsed, agreed_signal
        sint, sterm, secs = sums[-3:].tolist()
        agreed_elapsed = secs / world
        agreed_signal = signal.SIGTERM if sterm > 0 else signal.SIGINT if sint > 0 else None

    def hook(fn: Callable[..., None], *args: Any) -> None:
        nonlocal t_start
        t_hook = time.perf_counter()
        fn(*args)
        t_start += time.perf_counter() - t_hook

    def check_finite(upto: int, epoch: int) -> None:
        nonlocal checked
        if upto > checked:
            flags = bad[checked:upto]
            if flags.any().item():
                i = int(torch.nonzero(flags)[0].item())
                what = "loss" if flags[i].item() & 1 else "gradient"
                raise NonFiniteError(
                    f"non-finite {what} (NaN or Inf) at epoch {epoch + 1}, step {checked + i + 1}; training stopped "
                    "and the last good checkpoint is kept. Lower --lr, or pass --skip-nonfinite to skip such batches"
                )
            checked = upto

    def state(epoch: int, batch: int, finished: bool = False) -> TrainState:
        check_finite(step, epoch)  # never save a state that came from a non-finite step
        new_epoch = batch == 0
        return TrainState(
            step=step, epoch=epoch, batch=batch, seconds=time.perf_counter() - t_start, skipped=skipped, world_size=world,
            epoch_start_step=step if new_epoch else epoch_first, epoch_start_skipped=skipped if new_epoch else skipped_before,
            elbos=elbos[:step].detach().cpu().clone(), optimizer=copy.deepcopy(opt.state_dict()), rng=capture_rng(), finished=finished,
        )

    epochs_bar = tqdm(range(first_epoch, cfg.epochs), desc="epochs", initial=first_epoch, total=cfg.epochs, disable=not progress, dynamic_ncols=True)
    with _StopSignals() as signals:
        epoch, i = first_epoch, first_batch
        for epoch in epochs_bar:
            epoch_first, skipped_before = step, skipped  # where this epoch began
            if resume is not None and epoch == first_epoch:
                epoch_first, skipped_before = resume.epoch_start_step, resume.epoch_start_skipped
            # the data order of each epoch depends only on (seed, epoch)
            order_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(n_img, generator=order_gen).to(device)  # [N]
            start = first_batch if epoch == first_epoch else 0
            batches = tqdm(range(start, steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False, disable=not progress, dynamic_ncols=True)
            i = start
            for i in batches:
                if step >= total:
                    result.stopped_by = "max_steps"
                    break
                elapsed = time.perf_counter() - t_start if dist_info is None else agreed_elapsed
                if budget_s is not None and elapsed >= budget_s:
                    result.stopped_by = "time_budget"
                    break
                if cfg.lr_schedule != "constant":
                    frac = step / total  # how far through the run, by steps or by the clock
                    if budget_s is not None:
                        frac = max(frac, elapsed / budget_s)
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, frac)

                if dist_info is None:
                    x = images.index_select(0, perm[i * bs : (i + 1) * bs])  # [B, 1, H, W]
                    if cfg.binarize == "dynamic":
                        x = torch.bernoulli(x)  # a fresh binary image each time, from the global (checkpointed) RNG
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        terms = step_fn(x, cfg.samples, cfg.calibrated)
                    loss = terms.loss.float().mean()  # nats per image
                else:
                    idx = perm[i * bs : (i + 1) * bs]  # [B_global] the global batch
                    shard = distributed.BatchShard.of(len(idx))  # this rank's slice of it
                    if cfg.binarize == "dynamic":  # every rank draws the whole global batch's noise, keeps its slice
                        x = shard.draw(lambda b: torch.bernoulli(images.index_select(0, idx)))  # [B_local, 1, H, W]
                    else:
                        x = images.index_select(0, shard.take(idx))  # [B_local, 1, H, W]
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        terms = step_fn(x, cfg.samples, cfg.calibrated, shard)
                    # DDP averages gradients over ranks: world/B_global x local sum gives the global batch's mean
                    loss = terms.loss.float().sum() * (world / shard.size)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads_ok = torch.stack([torch.isfinite(p.grad).all() for p in params if p.grad is not None]).all()
                if dist_info is not None:
                    sums = agree([loss.detach(), (~grads_ok).to(loss.dtype)])  # one small all-reduce per step
                    loss = sums[0].float() / world  # the global batch's mean loss, identical on every rank
                    grads_ok = sums[1] == 0
                    if (i + 1) % check_every == 0:
                        read_agreed(sums)  # a host sync: every step on the CPU, every log_every steps on GPUs
                flag = (~torch.isfinite(loss.detach())).to(torch.int8) + 2 * (~grads_ok).to(torch.int8)
                if cfg.skip_nonfinite and flag.item():
                    skipped += 1  # a non-finite batch: no update, not counted as a step
                    opt.zero_grad(set_to_none=True)
                else:
                    bad[step] = flag
                    if (step + 1) % check_every == 0:
                        check_finite(step + 1, epoch)  # raises before this update is applied
                    opt.step()
                    if cfg.calibrated:
                        with torch.no_grad():
                            model.log_sig_x.copy_(terms.log_sig_x)
                    elbos[step] = -loss.detach()
                    step += 1
                if progress and step % log_every == 0 and step > epoch_first:
                    batches.set_postfix(elbo=f"{elbos[max(epoch_first, step - log_every):step].mean().item():.1f}")
                stop_signal = signals.received if dist_info is None else agreed_signal
                if stop_signal is not None:
                    if on_checkpoint is not None:
                        hook(on_checkpoint, state(epoch, i + 1))
                    name = signal.Signals(stop_signal).name
                    raise TrainingInterrupted(f"{name} received at epoch {epoch + 1}, step {step}", stop_signal)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step > 0 and on_checkpoint is not None:
                    hook(on_checkpoint, state(epoch, i + 1))
            else:
                i = steps_per_epoch  # the epoch ran to its end
            if i == start and step == epoch_first and skipped == skipped_before:  # a limit fell on an epoch boundary
                break
            check_finite(step, epoch)
            done = elbos[epoch_first:step]
            stats = {
                "train_elbo": done.mean().item() if len(done) else float("nan"),
                "sigma_x": model.log_sig_x.exp().item() if getattr(model, "likelihood", "gaussian") == "gaussian" else float("nan"),
                "steps": step,
                "skipped": skipped,
                "seconds": time.perf_counter() - t_start,
            }
            result.epochs_done = epoch + 1
            epochs_bar.set_postfix(elbo=f"{stats['train_elbo']:.1f}", sigma_x=f"{stats['sigma_x']:.3f}")
            if on_epoch_end is not None:
                hook(on_epoch_end, epoch, stats)
            if on_checkpoint is not None and result.stopped_by == "epochs":
                hook(on_checkpoint, state(epoch + 1, 0) if i >= steps_per_epoch else state(epoch, i))
            if result.stopped_by != "epochs":
                break
        if on_checkpoint is not None:  # the end: a resume of this state has nothing left to do
            hook(on_checkpoint, state(epoch, i, finished=True))
        if dist_info is not None:
            read_agreed(agree([]))
        stop_signal = signals.received if dist_info is None else agreed_signal
        if stop_signal is not None:  # arrived during the last evaluation or checkpoint
            name = signal.Signals(stop_signal).name
            raise TrainingInterrupted(f"{name} received after the last step ({step})", stop_signal)
    epochs_bar.close()
    result.steps = step
    result.skipped = skipped
    result.seconds = time.perf_counter() - t_start
    result.batch_elbos = elbos[:step].tolist()
    return result


def train_vae(
    model: SimpleVAE,
    dataset: Any,
    epochs: int = 20,
    n_samples: int = 10,
    batch_size: int = 256,
    *,
    lr: float = 1e-3,
    device: str = "auto",
    seed: int | None = None,
    calibrated: bool = False,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` with the assignment's recipe; return the per-batch ELBO (nats per image).

    Args:
        model: a SimpleVAE (or a module with its interface).
        dataset: images [N, 1, 28, 28], a TensorDataset, or any Dataset yielding (image, label).
        epochs, n_samples, batch_size: the assignment's defaults (20, 10, 256).
        lr: Adam learning rate.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        seed: if given, seed everything first (same seed, same CPU results).
        calibrated: use the calibrated decoder (log_sig_x = 0.5 log MSE per batch).
        progress: show tqdm bars for epochs and batches.

    The model is left on the training device. Prints the learned sigma_x at the end.
    """
    if seed is not None:
        set_seed(seed)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        samples=n_samples,
        lr=lr,
        lr_schedule="constant",
        calibrated=calibrated,
        seed=0 if seed is None else seed,
        device=device,
    )
    result = fit(model, as_image_tensor(dataset), cfg, progress=progress)
    if getattr(model, "likelihood", "gaussian") == "gaussian":
        print(f"learned sigma_x = {model.log_sig_x.exp().item():.4f}")
    return result.batch_elbos
