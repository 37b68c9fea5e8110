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
from .checkpoint import TrainState, capture_rng, restore_rng
from .config import TrainConfig, resolve_device, resolve_precision, validate
from .data import NpyRows, binarize, to_float
from .model import VAE
from .objectives import Objective, Terms, make_objective

__all__ = [
    "train_vae", "fit", "FitResult", "TrainLoop", "TrainingModule", "NonFiniteError", "TrainingInterrupted",
    "set_seed", "as_image_tensor", "configure_threads", "kl_beta", "lr_factor", "lr_warmup_factor",
]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device): the same seed gives the same CPU results."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(share: int = 1) -> int:
    """Give torch one intra-op thread per core this process may run on; returns the count.

    ``share``: processes on this machine sharing those cores (data-parallel ranks), each
    getting an equal part (at least one thread). ``OMP_NUM_THREADS``, where set, is the most
    it gives (e.g. parallel test workers, each with one thread).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    n = max(1, n // max(1, share))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        n = min(n, int(omp))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def as_image_tensor(dataset: Any, name: str = "dataset") -> Tensor:
    """Images as one tensor [N, C, H, W] (floats in [0, 1] or uint8) from a tensor or any Dataset of (image, label)."""
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
    if not images.is_floating_point() and images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must hold floating-point images in [0, 1] or uint8 pixels in 0..255, got dtype {images.dtype}"
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
    batch_objectives: list[float] | None = None  # per-step training objective, when it is not the ELBO


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


def lr_warmup_factor(warmup: int, step: int) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based): (step + 1) / warmup for the
    first ``warmup`` steps, then 1 (a linear warm-up, Goyal et al. 2017). Adam's first steps at full lr
    can switch off every ReLU of a conv encoder for good; rising to it avoids that (benchmarks/README.md)."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def _restore_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    opt.load_state_dict(state)
    for group in opt.param_groups:  # keep each state tensor in its parameter's memory format
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    opt.state[p][key] = torch.empty_like(p).copy_(value)


def kl_beta(cfg: TrainConfig, step: int) -> float:
    """The KL weight at optimizer step ``step``: ``cfg.beta``, reached linearly from 0 over ``cfg.kl_warmup`` steps."""
    if cfg.kl_warmup <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, step / cfg.kl_warmup)


class TrainingModule(nn.Module):
    """A model and its objective as one module whose forward returns the per-image terms,
    so that DistributedDataParallel (which syncs the gradients of a forward) needs nothing more."""

    def __init__(self, model: VAE, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, **kwargs: Any) -> Terms:
        return self.objective(self.model, x, **kwargs)


class TrainLoop:
    """The training loop: ``run`` -> ``run_epoch`` -> ``run_step`` -> ``forward_backward``, as in
    improved-diffusion's TrainLoop. See ``fit`` for what it does.

    Every process of a data-parallel run runs this same loop; a single process is a run of
    size one (``BatchShard`` then holds the whole batch and the all-reduces do nothing).
    """

    def __init__(
        self, model: VAE, images: Any, cfg: TrainConfig, *, progress: bool, on_epoch_end: EpochHook | None,
        on_checkpoint: CheckpointHook | None, resume: TrainState | None, log_every: int,
    ):
        validate(cfg)
        self.cfg, self.model, self.log_every = cfg, model, log_every
        self.on_epoch_end, self.on_checkpoint, self.resume = on_epoch_end, on_checkpoint, resume
        dist_info = distributed.current()
        self.world = 1 if dist_info is None else dist_info.world_size
        self.progress = progress and (dist_info is None or dist_info.is_main)
        device = resolve_device(cfg.device)
        if device.type == "cuda" and device.index is None and dist_info is not None:
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (LOCAL_RANK)
        if device.type == "cpu":
            configure_threads(1 if dist_info is None else dist_info.local_world_size)
        self.device = device
        if device.type == "cuda":
            # cuDNN's fastest convolution gradients add up with atomics, in an order that changes from
            # run to run: its deterministic algorithms make a resumed run bit-identical to an
            # uninterrupted one on a GPU too (the CPU's kernels are deterministic already)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        self.streamed = isinstance(images, NpyRows)  # larger than memory: read from disk a batch at a time
        if self.streamed:
            if cfg.binarize == "static":
                raise ValueError("binarize='static' draws the whole training set at once and needs it in memory; use 'dynamic'")
        else:
            images = as_image_tensor(images, "images")
            if images.is_floating_point():
                images = images.to(torch.float32)
            images = images.to(device)  # uint8 stays uint8: a quarter of the memory, made float per batch
        if cfg.binarize == "static":
            images = binarize(to_float(images))  # one fixed draw (data.BINARIZE_SEED)
        self.images, self.n_img = images, images.shape[0]
        self.bs = cfg.batch_size * self.world  # the global batch
        if self.bs > self.n_img:
            per_rank = f" (global batch {self.bs} = batch_size x {self.world} processes)" if self.world > 1 else ""
            raise ValueError(f"batch_size={cfg.batch_size}{per_rank} is larger than the {self.n_img} training images")
        if resume is not None and resume.world_size != self.world:
            raise ValueError(
                f"the checkpoint was written by a run on {resume.world_size} process(es) and must be resumed on as many "
                f"(its batch positions count global batches), got {self.world}; e.g. torchrun --nproc-per-node={resume.world_size} -m vaekit train --resume RUN_DIR"
            )
        model.to(device)
        if device.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
            model.to(memory_format=torch.channels_last)
        model.train()
        self.objective = make_objective(cfg.objective, cfg.PARTS["objective"].pick_options(cfg.objective, cfg.options))
        self.n_samples = self.objective.samples  # N for the ELBO, k for IWAE
        # the per-step training objective is recorded apart from the ELBO when they differ
        self.track_objective = not self.objective.trains_elbo or cfg.beta != 1.0 or cfg.kl_warmup > 0
        step_fn: Any = TrainingModule(model, self.objective)
        if dist_info is not None:
            # static_graph: the same parameters are used every step (log_sig_x not at all with calibrated=True)
            step_fn = torch.nn.parallel.DistributedDataParallel(
                step_fn, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True,
            )
        self.step_fn = torch.compile(step_fn) if cfg.compile else step_fn
        # the networks' arithmetic (config.resolve_precision): bf16 autocast or fp32; the objective,
        # the optimizer state and the master weights are fp32 in every mode
        self.autocast_dtype, self.precision_reason = resolve_precision(cfg.precision, device)
        self.precision = "bf16" if self.autocast_dtype is not None else "fp32"
        self.opt = _make_adam(model, cfg.lr, device)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]

        self.steps_per_epoch = math.ceil(self.n_img / self.bs)
        self.total = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total = min(self.total, cfg.max_steps)
        self.budget_s = None if cfg.time_budget is None else 60.0 * cfg.time_budget
        self.elbos = torch.zeros(self.total, device=device)  # [steps] per-step ELBO, nats per image
        self.objectives = torch.zeros(self.total, device=device) if self.track_objective else None  # [steps]
        # non-finite flags per step (1: loss, 2: gradient), read every `check_every` steps: every
        # step on the CPU, where reading costs nothing; lazily on accelerators, to avoid host syncs
        self.bad = torch.zeros(self.total, dtype=torch.int8, device=device)
        self.check_every = 1 if device.type == "cpu" or cfg.skip_nonfinite else log_every
        self.checked = 0  # steps whose flags were read
        self.result = FitResult()
        self.step, self.first_epoch, self.first_batch, self.skipped, seconds0 = 0, 0, 0, 0, 0.0
        if resume is not None:
            self.step, self.first_epoch, self.first_batch = resume.step, resume.epoch, resume.batch
            self.skipped, seconds0 = resume.skipped, resume.seconds
            self.elbos[: self.step] = resume.elbos[: self.step].to(device)
            if self.objectives is not None:
                past = resume.objective if resume.objective is not None else resume.elbos
                self.objectives[: self.step] = past[: self.step].to(device)
            self.checked = self.step
            _restore_optimizer(self.opt, resume.optimizer)
            restore_rng(resume.rng)
        self.t_start = time.perf_counter() - seconds0  # moved forward by the time spent in hooks
        self.elapsed, self.stop_signal = seconds0, None  # the clock and signals, as all processes agree
        self.epoch_first, self.skipped_before = 0, 0  # step and skipped count where the epoch in progress began
        self.signals = _StopSignals()

    # ------------------------------------------------------------------ the loop

    def run(self) -> FitResult:
        cfg = self.cfg
        bar = tqdm(range(self.first_epoch, cfg.epochs), desc="epochs", initial=self.first_epoch, total=cfg.epochs,
                   disable=not self.progress, dynamic_ncols=True)
        with self.signals:
            epoch, i = self.first_epoch, self.first_batch
            for epoch in bar:
                i, went_on = self.run_epoch(epoch, bar)
                if not went_on:
                    break
            self.checkpoint(epoch, i, finished=True)  # the end: a resume of this state has nothing left to do
            self.read_agreed(self.agree([]))
            if self.stop_signal is not None:  # arrived during the last evaluation or checkpoint
                name = signal.Signals(self.stop_signal).name
                raise TrainingInterrupted(f"{name} received after the last step ({self.step})", self.stop_signal)
        bar.close()
        r = self.result
        r.steps, r.skipped, r.seconds = self.step, self.skipped, time.perf_counter() - self.t_start
        r.batch_elbos = self.elbos[: self.step].tolist()
        if self.objectives is not None:
            r.batch_objectives = self.objectives[: self.step].tolist()
        return r

    def run_epoch(self, epoch: int, bar: Any) -> tuple[int, bool]:
        """Train one epoch (from its saved position when resuming); returns (batches consumed, whether to go on)."""
        cfg, resumed = self.cfg, self.resume is not None and epoch == self.first_epoch
        self.epoch_first, self.skipped_before = self.step, self.skipped
        if resumed:
            self.epoch_first, self.skipped_before = self.resume.epoch_start_step, self.resume.epoch_start_skipped
        # the data order of each epoch depends only on (seed, epoch)
        order_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(self.n_img, generator=order_gen).to(self.device)  # [N]
        start = self.first_batch if epoch == self.first_epoch else 0
        batches = tqdm(range(start, self.steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False,
                       disable=not self.progress, dynamic_ncols=True)
        i = start
        for i in batches:
            if self.step >= self.total:
                self.result.stopped_by = "max_steps"
                break
            if self.budget_s is not None and self.elapsed >= self.budget_s:
                self.result.stopped_by = "time_budget"
                break
            self.run_step(perm[i * self.bs : (i + 1) * self.bs], epoch)  # [B_global] the global batch
            if self.progress and self.step % self.log_every == 0 and self.step > self.epoch_first:
                recent = self.elbos[max(self.epoch_first, self.step - self.log_every) : self.step].mean().item()
                batches.set_postfix(elbo=f"{recent:.1f}")
            if self.stop_signal is not None:
                self.checkpoint(epoch, i + 1)
                name = signal.Signals(self.stop_signal).name
                raise TrainingInterrupted(f"{name} received at epoch {epoch + 1}, step {self.step}", self.stop_signal)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step > 0:
                self.checkpoint(epoch, i + 1)
        else:
            i = self.steps_per_epoch  # the epoch ran to its end
        if i == start and self.step == self.epoch_first and self.skipped == self.skipped_before:
            return i, False  # a limit fell on an epoch boundary
        self.check_finite(self.step, epoch)
        self.end_epoch(epoch, bar)
        if self.result.stopped_by == "epochs":
            self.checkpoint(epoch + 1, 0) if i >= self.steps_per_epoch else self.checkpoint(epoch, i)
            return i, True
        return i, False

    def run_step(self, idx: Tensor, epoch: int) -> None:
        """One optimizer step on the global batch ``idx`` (this process trains its slice of it)."""
        cfg = self.cfg
        if cfg.lr_schedule != "constant" or cfg.lr_warmup > 0:
            frac = self.step / self.total  # how far through the run, by steps or by the clock
            if self.budget_s is not None:
                frac = max(frac, self.elapsed / self.budget_s)
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, frac) * lr_warmup_factor(cfg.lr_warmup, self.step)
        shard = distributed.BatchShard.of(len(idx))  # this process's slice of the global batch
        x = self.batch(idx, shard)  # [B_local, C, H, W]
        terms, loss = self.forward_backward(x, shard)
        grads_ok = torch.stack([torch.isfinite(p.grad).all() for p in self.params if p.grad is not None]).all()
        scale = self.world / shard.size  # x local sum = this process's part of the global batch's mean
        sums = self.agree([loss.detach(), terms.elbo.detach().float().sum() * scale, (~grads_ok).to(loss.dtype)])
        if self.step % self.check_every == 0:
            self.read_agreed(sums)  # a host sync: every step on the CPU, every log_every steps on GPUs
        loss_g, elbo_g = sums[0].float() / self.world, sums[1].float() / self.world  # the global batch's means
        flag = (~torch.isfinite(loss_g)).to(torch.int8) + 2 * (sums[2] != 0).to(torch.int8)
        if cfg.skip_nonfinite and flag.item():
            self.skipped += 1  # a non-finite batch: no update, not counted as a step
            self.opt.zero_grad(set_to_none=True)
            return
        self.bad[self.step] = flag
        if (self.step + 1) % self.check_every == 0:
            self.check_finite(self.step + 1, epoch)  # raises before this update is applied
        self.opt.step()
        if cfg.calibrated:
            with torch.no_grad():
                self.model.log_sig_x.copy_(terms.log_sig_x)
        self.elbos[self.step] = elbo_g
        if self.objectives is not None:
            self.objectives[self.step] = -loss_g
        self.step += 1

    def batch(self, idx: Tensor, shard: distributed.BatchShard) -> Tensor:
        """This process's images of the global batch ``idx``, float32 in [0, 1] on the device."""
        if self.cfg.binarize == "dynamic":  # a fresh binary image each time, drawn for the whole global batch
            return shard.draw(lambda b: torch.bernoulli(self.rows(idx)))
        return self.rows(shard.take(idx))

    def rows(self, idx: Tensor) -> Tensor:
        """Images ``idx`` as float32 in [0, 1] on the device (read from disk when streamed)."""
        if self.streamed:
            return to_float(self.images.index_select(0, idx.cpu()).to(self.device))
        return to_float(self.images.index_select(0, idx))

    def forward_backward(self, x: Tensor, shard: distributed.BatchShard) -> tuple[Terms, Tensor]:
        """The objective's per-image terms on this process's images, and the gradient of the global batch's mean loss."""
        cfg, k = self.cfg, self.model.latent_dim
        # the samples of z: noise drawn for the whole global batch, this process keeping its slice
        eps = shard.draw(lambda b: torch.empty((self.n_samples, b, k), device=self.device).normal_(), dim=1)  # [N, B, K]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
            terms = self.step_fn(
                x, beta=kl_beta(cfg, self.step), calibrated=cfg.calibrated, eps=eps, batch_mean=shard.mean,
                dataset_size=self.n_img,
            )
        # DDP averages gradients over processes: world / B_global x local sum gives the global batch's mean
        loss = terms.loss.float().sum() / shard.size * self.world
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return terms, loss

    def end_epoch(self, epoch: int, bar: Any) -> None:
        cfg = self.cfg
        done = self.elbos[self.epoch_first : self.step]
        stats = {
            "train_elbo": done.mean().item() if len(done) else float("nan"),
            "sigma_x": self.model.log_sig_x.exp().item() if self.model.likelihood.has_scale else float("nan"),
            "steps": self.step,
            "skipped": self.skipped,
            "seconds": time.perf_counter() - self.t_start,
            # the last epoch of the run: the epochs, the step limit or the time budget end here
            "final": self.result.stopped_by != "epochs" or epoch + 1 >= cfg.epochs or self.step >= self.total
            or (self.budget_s is not None and self.elapsed >= self.budget_s),
            "precision": self.precision,
        }
        if self.objectives is not None:
            objective = self.objectives[self.epoch_first : self.step]
            stats["train_objective"] = objective.mean().item() if len(objective) else float("nan")
        self.result.epochs_done = epoch + 1
        bar.set_postfix(elbo=f"{stats['train_elbo']:.1f}", sigma_x=f"{stats['sigma_x']:.3f}")
        if self.on_epoch_end is not None:
            self.hook(self.on_epoch_end, epoch, stats)

    # ------------------------------------------------------------------ bookkeeping

    def agree(self, values: list[Tensor]) -> Tensor:
        """Sum over processes of [*values, SIGINT seen, SIGTERM seen, elapsed s] (float64, on the device)."""
        sig = self.signals.received
        local = torch.tensor(
            [float(sig == signal.SIGINT), float(sig == signal.SIGTERM), time.perf_counter() - self.t_start], dtype=torch.float64,
        ).to(self.device, non_blocking=True)  # [3]
        if values:
            local = torch.cat([torch.stack(values).to(torch.float64), local])
        return distributed.all_reduce_sum(local)  # [len(values) + 3]

    def read_agreed(self, sums: Tensor) -> None:
        sint, sterm, secs = sums[-3:].tolist()
        self.elapsed = secs / self.world
        self.stop_signal = signal.SIGTERM if sterm > 0 else signal.SIGINT if sint > 0 else None

    def hook(self, fn: Callable[..., None], *args: Any) -> None:
        """Call a hook; its time is not training time."""
        t_hook = time.perf_counter()
        fn(*args)
        self.t_start += time.perf_counter() - t_hook

    def check_finite(self, upto: int, epoch: int) -> None:
        if upto > self.checked:
            flags = self.bad[self.checked : upto]
            if flags.any().item():
                i = int(torch.nonzero(flags)[0].item())
                what = "loss" if flags[i].item() & 1 else "gradient"
                raise NonFiniteError(
                    f"non-finite {what} (NaN or Inf) at epoch {epoch + 1}, step {self.checked + i + 1}; training stopped "
                    "and the last good checkpoint is kept. Lower --lr, or pass --skip-nonfinite to skip such batches"
                )
            self.checked = upto

    def checkpoint(self, epoch: int, batch: int, finished: bool = False) -> None:
        if self.on_checkpoint is not None:
            self.hook(self.on_checkpoint, self.state(epoch, batch, finished))

    def state(self, epoch: int, batch: int, finished: bool = False) -> TrainState:
        self.check_finite(self.step, epoch)  # never save a state that came from a non-finite step
        new_epoch = batch == 0
        return TrainState(
            step=self.step, epoch=epoch, batch=batch, seconds=time.perf_counter() - self.t_start, skipped=self.skipped,
            world_size=self.world, finished=finished,
            epoch_start_step=self.step if new_epoch else self.epoch_first,
            epoch_start_skipped=self.skipped if new_epoch else self.skipped_before,
            elbos=self.elbos[: self.step].detach().cpu().clone(),
            objective=None if self.objectives is None else self.objectives[: self.step].detach().cpu().clone(),
            optimizer=copy.deepcopy(self.opt.state_dict()), rng=capture_rng(),
        )


def fit(
    model: VAE,
    images: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    resume: TrainState | None = None,
    log_every: int = 10,
) -> FitResult:
    """Train ``model`` on ``images`` [N, C, H, W] as ``cfg`` says; the model and data follow cfg.device.

    ``images`` are floats in [0, 1] or uint8 pixels (kept uint8 on the device and made float
    one batch at a time), or a ``data.NpyRows`` for data larger than memory (read from
    disk a batch at a time). The objective is ``cfg.objective`` (``objectives.OBJECTIVES``) with
    the KL weight ``kl_beta(cfg, step)``; the per-step "ELBO" recorded is always the true
    bound (beta = 1), and a different training objective is recorded beside it.

    Hooks (their time is not counted as training time, nor against ``cfg.time_budget``):

    * ``on_epoch_end(epoch, stats)`` after every epoch (also a partial last one), with
      ``train_elbo`` (mean per-step ELBO, nats per image), ``sigma_x``, ``steps``,
      ``skipped`` and ``seconds`` (training time so far), ``train_objective`` when
      the objective is not the ELBO, ``final`` (the run's last epoch: the epochs, the step
      limit or the time budget end here) and ``precision`` ("fp32" or "bf16");
    * ``on_checkpoint(state)`` after each epoch's ``on_epoch_end``, every
      ``cfg.checkpoint_every`` steps, when SIGINT/SIGTERM arrives (then ``fit`` raises
      ``TrainingInterrupted``) and once at the end (``state.finished``).

    ``resume`` continues from a saved ``TrainState`` (the model must hold its weights):
    the result is bit-identical to a run that was never interrupted on the same device (on a
    GPU, training sets cuDNN to its deterministic algorithms for this), as long as no time
    budget is set (a budget makes the stopping point depend on the clock).

    ``cfg.precision`` (``config.resolve_precision``): "bf16" runs the networks under bf16
    autocast, "auto" does so only where the device computes bf16 natively; the objective's
    terms, the gradients, Adam's state and the weights are float32 in every mode.

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
    loop = TrainLoop(
        model, images, cfg, progress=progress, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint,
        resume=resume, log_every=log_every,
    )
    return loop.run()


def train_vae(
    model: VAE,
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
        model: a SimpleVAE, or any ``vaekit.VAE``.
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
        options={"samples": n_samples},
        lr=lr,
        lr_schedule="constant",
        calibrated=calibrated,
        seed=0 if seed is None else seed,
        device=device,
    )
    result = fit(model, as_image_tensor(dataset), cfg, progress=progress)
    if model.likelihood.has_scale:
        print(f"learned sigma_x = {model.log_sig_x.exp().item():.4f}")
    return result.batch_elbos
