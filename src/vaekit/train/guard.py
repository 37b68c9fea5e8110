"""The non-finite guard: a NaN or Inf loss or gradient stops training before its update is applied
(``NonFiniteError``), or, with ``skip_nonfinite``, skips that batch."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

__all__ = ["NonFiniteError", "NonFiniteGuard", "LOSS", "GRADIENT"]

LOSS, GRADIENT = 1, 2  # the bits of a step's flag


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN or Inf; training stopped before saving anything from it."""


def gradients_bad(params: Iterable[Tensor]) -> Tensor:
    """True (a bool tensor, on the device: no host sync) if any gradient holds a NaN or Inf."""
    return ~torch.stack([torch.isfinite(p.grad).all() for p in params if p.grad is not None]).all()


class NonFiniteGuard:
    """Per-step flags (``LOSS`` | ``GRADIENT``) kept on the device and read every ``check_every`` steps:
    every step on the CPU, where reading costs nothing, lazily on accelerators (no host sync per step).

    Reading raises ``NonFiniteError`` naming the first bad step; a lazy check still comes before the
    update of the step that completes a window, and before any state is saved (``check`` up to the
    current step), so no checkpoint ever holds weights from a non-finite step. With ``skip`` every
    step is read at once and a bad batch is skipped instead (no update, not counted as a step).
    """

    def __init__(self, total: int, device: torch.device, *, check_every: int = 1, skip: bool = False, checked: int = 0):
        self.skip = skip
        self.check_every = 1 if skip else check_every
        self.flags = torch.zeros(total, dtype=torch.int8, device=device)  # [steps]
        self.checked = checked  # steps whose flags were read (a resumed run's earlier steps were)

    @staticmethod
    def flag(loss: Tensor, bad_gradients: Tensor) -> Tensor:
        """A step's flag (int8 on the device) from its global loss and the processes' count of bad gradients."""
        return (~torch.isfinite(loss)).to(torch.int8) + GRADIENT * (bad_gradients != 0).to(torch.int8)

    def skips(self, flag: Tensor) -> bool:
        """With ``skip``: whether this batch is to be skipped (reads the flag: a host sync)."""
        return self.skip and bool(flag.item())

    def record(self, step: int, flag: Tensor, epoch: int) -> None:
        """Keep step ``step``'s flag; read the window it completes (raises before that step's update)."""
        self.flags[step] = flag
        if (step + 1) % self.check_every == 0:
            self.check(step + 1, epoch)

    def check(self, upto: int, epoch: int) -> None:
        """Read the flags of the steps before ``upto`` not read yet; NonFiniteError at the first bad one."""
        if upto > self.checked:
            flags = self.flags[self.checked : upto]
            if flags.any().item():
                i = int(torch.nonzero(flags)[0].item())
                what = "loss" if flags[i].item() & LOSS else "gradient"
                raise NonFiniteError(
                    f"non-finite {what} (NaN or Inf) at epoch {epoch + 1}, step {self.checked + i + 1}; training stopped "
                    "and the last good checkpoint is kept. Lower --lr, or pass --skip-nonfinite to skip such batches"
                )
            self.checked = upto
