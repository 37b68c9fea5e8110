"""Where and how this process trains: the device, its threads, cuDNN's determinism, the precision, the
data-parallel group, and the model made ready for it (channels_last, DistributedDataParallel,
torch.compile) with its Adam optimizer."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed
from ..conditioning import given
from ..config import resolve_device, resolve_precision
from ..model import VAE
from ..objectives import Objective, Terms, make_objective

__all__ = ["Runtime", "TrainingModule", "set_seed", "configure_threads", "make_adam", "restore_optimizer"]


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


def make_adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over the trainable parameters, with its fused kernels where they exist, else foreach."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused kernels exist for CUDA and, in recent torch, for CPU
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "cpu" or None)


def restore_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved ``opt.state_dict()``, keeping each state tensor in its parameter's memory format."""
    opt.load_state_dict(state)
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    opt.state[p][key] = torch.empty_like(p).copy_(value)


class TrainingModule(nn.Module):
    """A model and its objective as one module whose forward returns the per-image terms,
    so that DistributedDataParallel (which syncs the gradients of a forward) needs nothing more.
    A conditional model (``vaekit.conditions``) holds the condition of this process's images during it."""

    def __init__(self, model: VAE, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Terms:
        with given(self.model, x, labels):  # no-op for an unconditional model
            return self.objective(self.model, x, **kwargs)


@dataclass
class Runtime:
    """This process's training set-up. ``Runtime.start(cfg)`` chooses it; ``prepare`` readies a model for it.

    A single process is a data-parallel run of size one (``dist`` None): its ``shard`` holds the
    whole batch and ``all_reduce_sum`` changes nothing.
    """

    device: torch.device
    dist: distributed.DistInfo | None  # the process group, or None in one process
    autocast_dtype: torch.dtype | None  # the networks' arithmetic: bfloat16 autocast, or None for fp32
    precision_reason: str  # why (config.resolve_precision)

    @classmethod
    def start(cls, cfg: Any) -> "Runtime":
        """The device (this rank's GPU under torchrun), a thread per core on the CPU, cuDNN's deterministic
        algorithms on CUDA, and the precision ``cfg.precision`` resolves to on that device."""
        dist_info = distributed.current()
        device = resolve_device(cfg.device)
        if device.type == "cuda" and device.index is None and dist_info is not None:
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (LOCAL_RANK)
        if device.type == "cpu":
            configure_threads(1 if dist_info is None else dist_info.local_world_size)
        if device.type == "cuda":
            # cuDNN's fastest convolution gradients add up with atomics, in an order that changes from
            # run to run: its deterministic algorithms make a resumed run bit-identical to an
            # uninterrupted one on a GPU too (the CPU's kernels are deterministic already)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        # the objective, the optimizer state and the master weights are fp32 in every mode
        autocast_dtype, why = resolve_precision(cfg.precision, device)
        return cls(device, dist_info, autocast_dtype, why)

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world_size

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype is not None else "fp32"

    def check_resumable(self, state: Any) -> None:
        """A checkpoint (``TrainState`` or None) resumes only on as many processes as wrote it."""
        if state is not None and state.world_size != self.world:
            raise ValueError(
                f"the checkpoint was written by a run on {state.world_size} process(es) and must be resumed on as many "
                f"(its batch positions count global batches), got {self.world}; "
                f"e.g. torchrun --nproc-per-node={state.world_size} -m vaekit train --resume RUN_DIR"
            )

    def shard(self, size: int) -> distributed.BatchShard:
        """This process's slice of a global batch of ``size`` items."""
        return distributed.BatchShard.of(size)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the processes (in place)."""
        return distributed.all_reduce_sum(t)

    def prepare(self, model: VAE, cfg: Any) -> tuple[Any, Objective]:
        """Move ``model`` to the device (channels_last where convolutions are faster so), make ``cfg``'s
        objective, and return (the step function: model and objective as one module, under DDP in a
        process group and torch.compile'd with ``cfg.compile``; the objective)."""
        device = self.device
        model.to(device)
        if device.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
            model.to(memory_format=torch.channels_last)
        model.train()
        objective = make_objective(cfg.objective, cfg.PARTS["objective"].pick_options(cfg.objective, cfg.options))
        step_fn: Any = TrainingModule(model, objective)
        if self.dist is not None:
            # static_graph: the same parameters are used every step (log_sig_x not at all with calibrated=True)
            step_fn = torch.nn.parallel.DistributedDataParallel(
                step_fn, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True,
            )
        return (torch.compile(step_fn) if cfg.compile else step_fn), objective
