"""Data-parallel training on PyTorch's distributed engine: the process-group plumbing.

vaekit trains with ``DistributedDataParallel`` when it is started by ``torchrun`` (or
``vaekit train --distributed``, which re-launches itself through torchrun). Nothing
here runs at import time; ``session()`` joins the process group from torchrun's
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``)
and always leaves it again, also on errors.

How a global batch is shared (see ``BatchShard``): every rank computes the same
per-epoch permutation, global step i takes ``perm[i*Bg:(i+1)*Bg]`` with
``Bg = batch_size * world_size``, and rank r keeps its contiguous slice of it. Random
numbers that depend on the batch (samples of z, binarization noise, ...) are drawn by
every rank for the *whole* global batch from identically seeded generators, and each
rank keeps its slice: the ranks together use exactly the numbers one process would
use for that global batch, and their generators stay identical.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistInfo", "BatchShard", "current", "is_main", "launched_by_torchrun", "session",
    "shard_bounds", "all_reduce_sum", "broadcast_from_main", "barrier", "run_on_main", "RankFailed",
]

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class RankFailed(RuntimeError):
    """Raised on the other ranks when a step that only rank 0 runs (``run_on_main``) failed there."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group."""

    world_size: int  # processes in all
    rank: int  # this process, 0..world_size-1
    local_rank: int  # this process on its node (its GPU index on CUDA)
    local_world_size: int  # processes on this node
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables (WORLD_SIZE, RANK, LOCAL_RANK) are all set."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def current() -> DistInfo | None:
    """The process group this process belongs to, or None when training in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return DistInfo(
        world_size=world,
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        backend=str(dist.get_backend()),
    )


def is_main() -> bool:
    """True on rank 0, and in a process that is not part of a process group."""
    info = current()
    return info is None or info.is_main


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer (set by torchrun), got {value!r}") from None


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistInfo | None]:
    """Join torchrun's process group for the duration of the block (yields None when not under torchrun).

    The backend is NCCL when training on CUDA (``device`` "auto" with a GPU, or "cuda"),
    each process then using GPU ``LOCAL_RANK``; gloo on the CPU. MPS has no backend:
    an error. The group is destroyed on the way out, also when the block raises.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; train in one process (without torchrun)")
    world, rank, local_rank = (_env_int(v) for v in TORCHRUN_VARS)
    kind = str(device).split(":")[0]
    use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
    if kind == "mps":
        raise ValueError("device 'mps' cannot train data-parallel (torch.distributed has no MPS backend); use --device cpu")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested, but CUDA is not available on this machine; use --device cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA devices; "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    kwargs = {"device_id": torch.device("cuda", local_rank)} if use_cuda else {}
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank, **kwargs)
    try:
        yield current()
        # leave together: a rank that tears its connections down while another still works
        # (rank 0 drawing figures) can abort in gloo's teardown
        barrier()
    finally:
        dist.destroy_process_group()


def shard_bounds(size: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous slice [start, stop) of ``size`` items split over ``world_size`` ranks.

    The first ``size % world_size`` ranks get one item more; a rank gets none when
    ``size < world_size`` (the last, partial batch of an epoch).
    """
    if world_size < 1 or not 0 <= rank < world_size or size < 0:
        raise ValueError(f"need size >= 0 and 0 <= rank < world_size, got size={size}, rank={rank}, world_size={world_size}")
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks, in place, and return it (unchanged in a single process)."""
    if current() is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@dataclass(frozen=True)
class BatchShard:
    """This rank's contiguous slice [start, stop) of a global batch of ``size`` items.

    ``BatchShard.whole(n)`` is the single-process case (one rank holding everything);
    ``BatchShard.of(n)`` is this process's slice within the current process group.
    """

    size: int  # items in the global batch
    start: int
    stop: int
    world_size: int = 1

    @classmethod
    def whole(cls, size: int) -> "BatchShard":
        return cls(size, 0, size, 1)

    @classmethod
    def of(cls, size: int) -> "BatchShard":
        info = current()
        if info is None:
            return cls.whole(size)
        start, stop = shard_bounds(size, info.world_size, info.rank)
        return cls(size, start, stop, info.world_size)

    @property
    def local_size(self) -> int:
        return self.stop - self.start

    def take(self, global_tensor: Tensor, dim: int = 0) -> Tensor:
        """This rank's slice of a tensor that holds the whole global batch along ``dim``."""
        if global_tensor.shape[dim] != self.size:
            raise ValueError(f"global_tensor has {global_tensor.shape[dim]} items along dim {dim}, expected the global batch size {self.size}")
        return global_tensor.narrow(dim, self.start, self.local_size)

    def draw(self, draw_global: Callable[[int], Tensor], dim: int = 0) -> Tensor:
        """Call ``draw_global(global_batch_size)`` (random numbers for the whole global batch,
        batch along ``dim``) and keep this rank's slice.

        Every rank draws the same numbers from its identically seeded generator, so the
        ranks' slices together are what one process would draw for the global batch, and
        all generators stay in step. E.g. the samples of z:
        ``shard.draw(lambda b: torch.randn(n, b, k), dim=1)  # [N, B_local, K]``.
        """
        return self.take(draw_global(self.size), dim)

    def mean(self, t: Tensor) -> Tensor:
        """Mean over the whole global batch of a local tensor whose first dim is the local batch
        (e.g. the calibrated decoder's squared errors [B_local, N, D]); detached."""
        t = t.detach()
        if self.world_size == 1:
            return t.mean()
        total = all_reduce_sum(torch.stack([t.sum(), t.new_tensor(float(t.numel()))]))  # [2]: sum, count
        return total[0] / total[1]


def broadcast_from_main(t: Tensor) -> Tensor:
    """Rank 0's ``t`` on every rank (in place; unchanged in a single process)."""
    if current() is not None:
        dist.broadcast(t, src=0)
    return t


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    info = current()
    if info is not None:
        if info.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _message_tensor(text: str, device: torch.device) -> Tensor:
    data = text.encode("utf-8")[:4000]
    return torch.tensor([len(data), *data], dtype=torch.int64, device=device)  # [1 + bytes]


def run_on_main(fn: Callable[[], None], device: torch.device | None = None) -> None:
    """Run ``fn`` on rank 0 only, then tell every rank whether it worked.

    If ``fn`` raises on rank 0, rank 0 re-raises it and the other ranks raise
    ``RankFailed`` with its message, so that no rank waits forever for a failed one.
    """
    info = current()
    if info is None:
        fn()
        return
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl" else torch.device("cpu")
    error: BaseException | None = None
    if info.is_main:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the others
            error = e
    msg = _message_tensor(f"{type(error).__name__}: {error}" if error is not None else "", device)
    size = broadcast_from_main(msg[:1].clone())  # [1]
    body = msg[1:] if info.is_main else torch.zeros(int(size.item()), dtype=torch.int64, device=device)
    if int(size.item()):
        broadcast_from_main(body)
    if error is not None:
        raise error
    if int(size.item()):
        text = bytes(body.cpu().tolist()).decode("utf-8", errors="replace")
        raise RankFailed(f"rank 0 failed: {text}")
