"""Progress bars: one over the epochs, one over each epoch's batches with the recent ELBO."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from .callbacks import Callback

__all__ = ["Progress"]


class Progress(Callback):
    """tqdm bars (on one process of a data-parallel run). Every ``log_every`` steps the batch bar shows the
    mean ELBO of those steps: a host sync, which is why it is not every step."""

    def __init__(self, log_every: int = 10):
        self.log_every = log_every
        self.epochs: Any = None
        self.batches: Any = None

    def on_train_begin(self, loop: Any) -> None:
        self.epochs = tqdm(desc="epochs", initial=loop.pos.epoch, total=loop.cfg.epochs, dynamic_ncols=True)

    def on_epoch_begin(self, loop: Any, epoch: int, first_batch: int) -> None:
        total = loop.data.steps_per_epoch - first_batch
        self.batches = tqdm(desc=f"epoch {epoch + 1}", total=total, leave=False, dynamic_ncols=True)

    def on_step_end(self, loop: Any) -> None:
        self.batches.update()
        pos = loop.pos
        if pos.step % self.log_every == 0 and pos.step > pos.epoch_start_step:
            recent = loop.history.elbos[max(pos.epoch_start_step, pos.step - self.log_every) : pos.step].mean().item()
            self.batches.set_postfix(elbo=f"{recent:.1f}")

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        self.batches.close()
        self.epochs.set_postfix(elbo=f"{stats['train_elbo']:.1f}", sigma_x=f"{stats['sigma_x']:.3f}")
        self.epochs.update()

    def on_end(self, loop: Any) -> None:
        for bar in (self.batches, self.epochs):
            if bar is not None:
                bar.close()
