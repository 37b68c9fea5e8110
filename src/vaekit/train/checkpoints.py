"""When a checkpoint is written, decided in one place: every ``checkpoint_every`` steps, at the end of
every epoch that ran to its end, when SIGINT/SIGTERM arrives, and once at the end (``finished``)."""

from __future__ import annotations

from typing import Any, Callable

from ..checkpoint import TrainState
from .callbacks import Callback

__all__ = ["Checkpoints"]


class Checkpoints(Callback):
    """Hands ``loop.state()`` to ``save`` (``fit``'s ``on_checkpoint``) when one is due; place it last, so
    that an epoch's checkpoint holds what the other callbacks did at that epoch's end (its metrics row).

    * after a batch: if a signal was agreed on (the loop then stops), else if ``every`` is set and the
      step count is a positive multiple of it (a skipped batch leaves the count, and may write again);
    * at an epoch's end, if it ran to its end (the position is then the next epoch's start);
      an epoch cut short by the step limit or the time budget is saved by the end's checkpoint;
    * at the end, ``finished``.
    """

    def __init__(self, save: Callable[[TrainState], None], every: int | None = None):
        if every is not None and every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 steps (or None), got {every}")
        self.save, self.every = save, every

    def on_step_end(self, loop: Any) -> None:
        step = loop.pos.step
        if loop.stop.signal is not None or (self.every and step > 0 and step % self.every == 0):
            self.write(loop)

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        if loop.pos.epoch > epoch:
            self.write(loop)

    def on_end(self, loop: Any) -> None:
        self.write(loop, finished=True)

    def write(self, loop: Any, finished: bool = False) -> None:
        state = loop.state(finished)
        with loop.clock.paused():  # saving is not training time
            self.save(state)
