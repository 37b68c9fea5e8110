"""The callback protocol of ``TrainLoop``: what a callback may hook into, and a plain function as one.

Built-in callbacks, each in its own module: ``progress.Progress`` (tqdm bars),
``checkpoints.Checkpoints`` (when a checkpoint is written), and ``monitor.Monitor`` (the per-epoch
test ELBO and metrics row) with ``monitor.TensorBoard``.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Callback", "EpochEndFunction"]


class Callback:
    """Override what you need; the loop calls each in the order the callbacks were given.

    ``loop`` is the ``TrainLoop``: ``loop.pos`` (a ``checkpoint.Position``), ``loop.history``,
    ``loop.stop``, ``loop.clock``, ``loop.data``, ``loop.rt``, ``loop.state()``, ...
    Time spent in ``on_epoch_end`` and ``on_end`` is not training time (nor counted against the
    time budget); ``on_step_end`` runs on training time and should stay cheap.
    """

    def on_train_begin(self, loop: Any) -> None:
        """Before the first step (of this process: a resumed run begins at ``loop.pos``)."""

    def on_epoch_begin(self, loop: Any, epoch: int, first_batch: int) -> None:
        """Epoch ``epoch`` (0-based) starts at batch ``first_batch`` (not 0 when resumed mid-epoch)."""

    def on_step_end(self, loop: Any) -> None:
        """After each batch (``loop.pos.batch`` batches of the epoch done); a skipped batch leaves ``loop.pos.step`` as it was."""

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        """Epoch ``epoch`` ended (also a partial last one); ``stats`` as ``fit`` documents them."""

    def on_end(self, loop: Any) -> None:
        """Training ended (not called when it raised)."""


class EpochEndFunction(Callback):
    """``fn(epoch, stats)`` at every epoch's end: ``fit``'s ``on_epoch_end`` hook."""

    def __init__(self, fn: Callable[[int, dict[str, Any]], None]):
        self.fn = fn

    def on_epoch_end(self, loop: Any, epoch: int, stats: dict[str, Any]) -> None:
        self.fn(epoch, stats)
