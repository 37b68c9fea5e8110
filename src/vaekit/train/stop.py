"""When training stops: its epochs, ``max_steps``, the time budget, or SIGINT/SIGTERM, as every process agrees;
and the training clock they are measured on."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

__all__ = ["Clock", "StopSignals", "StopPolicy", "TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class Clock:
    """Training time in seconds: the time since ``start``, less the time spent ``paused`` (callbacks,
    checkpoints), plus the seconds a resumed run had already trained. ``time_fn`` is injectable for tests."""

    def __init__(self, time_fn: Callable[[], float] = time.perf_counter):
        self._time = time_fn
        self._origin = time_fn()
        self._paused_at: float | None = None
        self._depth = 0

    def start(self, seconds: float = 0.0) -> None:
        """Count from ``seconds`` (a resumed run's training time so far) from now on."""
        self._origin = self._time() - seconds

    def seconds(self) -> float:
        """Training time so far (while paused: up to the pause)."""
        now = self._paused_at if self._paused_at is not None else self._time()
        return now - self._origin

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time in this block is not training time (a pause inside a pause counts once)."""
        if self._depth == 0:
            self._paused_at = self._time()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._origin += self._time() - self._paused_at
                self._paused_at = None


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag checked between steps (a second SIGINT aborts at once)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
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
        self._old.clear()


class StopPolicy:
    """Whether the next step runs: the step limit (``cfg.epochs`` x steps per epoch, at most ``cfg.max_steps``),
    the time budget (``cfg.time_budget`` minutes of training time), a signal. The epochs themselves are the
    loop's; ``stopped_by`` names what ended the run ("epochs", "max_steps" or "time_budget").

    Every process contributes ``local()`` [SIGINT seen, SIGTERM seen, seconds] to a sum over processes and
    ``read``s the sum back, so that all stop at the same step: a signal seen by any process, and the mean
    clock. On accelerators the sum is read only every few steps (a host sync), so the budget and signals
    are acted on then.
    """

    def __init__(self, cfg: Any, steps_per_epoch: int, clock: Clock, world: int = 1, elapsed: float = 0.0):
        self.epochs = cfg.epochs
        self.total = cfg.epochs * steps_per_epoch  # steps of the whole run
        if cfg.max_steps is not None:
            self.total = min(self.total, cfg.max_steps)
        self.budget_s = None if cfg.time_budget is None else 60.0 * cfg.time_budget
        self.clock, self.world = clock, world
        self.signals = StopSignals()
        self.elapsed = elapsed  # training seconds, as the processes agree (last read; a resumed run's so far)
        self.signal: int | None = None  # SIGINT or SIGTERM, once any process saw one (last read)
        self.stopped_by = "epochs"

    def limit_reached(self, step: int) -> bool:
        """Before a step: True (and ``stopped_by`` says which) if the step limit or the time budget is reached."""
        if step >= self.total:
            self.stopped_by = "max_steps"
        elif self.budget_s is not None and self.elapsed >= self.budget_s:
            self.stopped_by = "time_budget"
        return self.stopped_by != "epochs"

    def fraction(self, step: int) -> float:
        """How far through the run, by steps or by the clock, whichever is further (the lr schedule's x)."""
        frac = step / self.total
        if self.budget_s is not None:
            frac = max(frac, self.elapsed / self.budget_s)
        return frac

    def is_final(self, epoch: int, step: int) -> bool:
        """Whether epoch ``epoch``, ending now after ``step`` steps, is the run's last."""
        return (
            self.stopped_by != "epochs" or epoch + 1 >= self.epochs or step >= self.total
            or (self.budget_s is not None and self.elapsed >= self.budget_s)
        )

    def local(self, device: torch.device) -> Tensor:
        """This process's [SIGINT seen, SIGTERM seen, training seconds] (float64, on ``device``) for the sum."""
        sig = self.signals.received
        return torch.tensor(
            [float(sig == signal.SIGINT), float(sig == signal.SIGTERM), self.clock.seconds()], dtype=torch.float64,
        ).to(device, non_blocking=True)  # [3]

    def read(self, sums: Tensor) -> None:
        """Take the processes' sum of ``local()`` (the last 3 entries of ``sums``): the mean clock, any signal."""
        sint, sterm, secs = sums[-3:].tolist()
        self.elapsed = secs / self.world
        self.signal = signal.SIGTERM if sterm > 0 else signal.SIGINT if sint > 0 else None

    def raise_if_signalled(self, where: str) -> None:
        """TrainingInterrupted if a signal was agreed on (its checkpoint is written by then)."""
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            raise TrainingInterrupted(f"{name} received {where}", self.signal)
