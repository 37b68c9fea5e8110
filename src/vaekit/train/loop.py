"""The training loop: ``run`` -> ``run_epoch`` -> ``run_step`` -> ``forward_backward``, as in
improved-diffusion's TrainLoop, over collaborators that each own one concern: the ``Runtime``
(device, precision, DDP), the ``BatchSource``, the ``StopPolicy`` and its clock, the
``NonFiniteGuard``, the ``History``, the learning rate, ``UpdateHook``s (gradient clipping) and
callbacks (progress, checkpoints, the monitor, TensorBoard). See ``fit`` for what it does.

Speed without changing the math: the whole dataset is one tensor on the training device, shuffled
by index each epoch (no per-item loading); the per-step values stay on the device and are read back
only when needed (no per-step host sync off the CPU); Adam uses its fused or foreach kernels.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checkpoint import Position, TrainState, capture_rng, restore_rng
from .batches import BatchSource
from .guard import NonFiniteGuard, gradients_bad
from .history import History
from .runtime import Runtime, make_adam, restore_optimizer
from .schedules import LearningRate, kl_beta
from .stop import Clock, StopPolicy
from .updates import update_hooks

__all__ = ["TrainLoop", "FitResult"]


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
    batch_extras: dict[str, list[float]] = field(default_factory=dict)  # per-step values of the objective's own terms


class TrainLoop:
    """Every process of a data-parallel run runs this same loop; a single process is a run of size one.

    ``callbacks``: objects with any of ``on_train_begin(loop)``, ``on_epoch_begin(loop, epoch, first_batch)``,
    ``on_step_end(loop)`` (after every batch), ``on_epoch_end(loop, epoch, stats)`` and ``on_end(loop)``
    (``callbacks.Callback``), called in order; their time at epoch ends and at the end is not training time.
    """

    def __init__(
        self, model: Any, images: Any, cfg: Any, *, callbacks: Sequence[Any] = (), resume: TrainState | None = None,
        log_every: int = 10, clock: Clock | None = None, labels: Tensor | None = None,
    ):
        self.cfg, self.model, self.callbacks = cfg, model, list(callbacks)
        condition = getattr(model, "condition", None)  # a conditional model (vaekit.conditions)
        if condition is not None and condition.needs_labels and labels is None:
            raise ValueError(f"the model's {condition.describe()} is made from the images' labels; pass labels [N] to fit")
        self.rt = rt = Runtime.start(cfg)
        self.data = BatchSource(images, cfg.batch_size, seed=cfg.seed, binarize_mode=cfg.binarize, device=rt.device, world=rt.world,
                                labels=labels if condition is not None else None)
        rt.check_resumable(resume)
        self.step_fn, self.objective = rt.prepare(model, cfg)
        self.opt = make_adam(model, cfg.lr, rt.device)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.lr, self.updates = LearningRate(cfg), update_hooks(cfg)
        self.pos, self.epochs_done = resume.position() if resume is not None else Position(), 0
        self.clock = clock or Clock()
        self.stop = StopPolicy(cfg, self.data.steps_per_epoch, self.clock, rt.world, elapsed=self.pos.seconds)
        # the per-step training objective is recorded apart from the ELBO when they differ
        track_objective = not self.objective.trains_elbo or cfg.beta != 1.0 or cfg.kl_warmup > 0
        self.history = History(self.stop.total, rt.device, track_objective)
        self.guard = NonFiniteGuard(self.stop.total, rt.device, check_every=1 if rt.device.type == "cpu" else log_every,
                                    skip=cfg.skip_nonfinite, checked=self.pos.step)
        if resume is not None:
            self.history.restore(resume)
            restore_optimizer(self.opt, resume.optimizer)
            restore_rng(resume.rng)
        self.clock.start(self.pos.seconds)

    # ------------------------------------------------------------------ the loop

    def run(self) -> FitResult:
        self.emit("on_train_begin")
        with self.stop.signals:
            while self.pos.epoch < self.cfg.epochs and self.run_epoch():
                pass
            self.emit("on_end", paused=True)  # the last checkpoint: a resume of it has nothing left to do
            self.stop.read(self.agree([]))
            self.stop.raise_if_signalled(f"after the last step ({self.pos.step})")  # during the last evaluation or checkpoint
        return FitResult(
            steps=self.pos.step, epochs_done=self.epochs_done, seconds=self.clock.seconds(), skipped=self.pos.skipped,
            stopped_by=self.stop.stopped_by, **self.history.lists(self.pos.step),
        )

    def run_epoch(self) -> bool:
        """Train the epoch in progress from its position; returns whether to go on to the next one."""
        pos, epoch, start = self.pos, self.pos.epoch, self.pos.batch
        self.emit("on_epoch_begin", epoch, start)
        for i, idx in self.data.batches(epoch, start):  # idx [B_global]: the global batch
            if self.stop.limit_reached(pos.step):
                break
            self.run_step(idx)
            pos.batch = i + 1
            self.emit("on_step_end")  # progress; a checkpoint every N steps or on a signal
            self.stop.raise_if_signalled(f"at epoch {epoch + 1}, step {pos.step}")
        if pos.batch == start and pos.step == pos.epoch_start_step and pos.skipped == pos.epoch_start_skipped:
            return False  # a limit fell on an epoch boundary
        self.guard.check(pos.step, epoch)
        stats = self.epoch_stats(epoch)
        ran_to_end = self.stop.stopped_by == "epochs"
        if ran_to_end:
            pos.next_epoch()
        self.epochs_done = epoch + 1
        self.emit("on_epoch_end", epoch, stats, paused=True)  # the monitor, ...; the epoch's checkpoint
        return ran_to_end

    def run_step(self, idx: Tensor) -> None:
        """One optimizer step on the global batch ``idx`` (this process trains its slice of it)."""
        pos, world = self.pos, self.rt.world
        self.lr.apply(self.opt, pos.step, self.stop.fraction(pos.step))
        shard = self.rt.shard(len(idx))  # this process's slice of the global batch
        x = self.data.take(idx, shard)  # [B_local, C, H, W]
        terms, loss = self.forward_backward(x, shard, self.data.take_labels(idx, shard))
        scale = world / shard.size  # x local sum = this process's part of the global batch's mean
        extras = terms.extra or {}
        sums = self.agree([
            loss.detach(), terms.elbo.detach().float().sum() * scale, gradients_bad(self.params).to(loss.dtype),
            *(v.detach().float().sum() * scale for v in extras.values()),
        ])
        if pos.step % self.guard.check_every == 0:
            self.stop.read(sums)  # a host sync: every step on the CPU, every log_every steps on GPUs
        loss_g, elbo_g = sums[0].float() / world, sums[1].float() / world  # the global batch's means
        flag = self.guard.flag(loss_g, sums[2])
        if self.guard.skips(flag):
            pos.skipped += 1  # a non-finite batch: no update, not counted as a step
            self.opt.zero_grad(set_to_none=True)
            return
        self.guard.record(pos.step, flag, pos.epoch)  # raises before this update is applied
        for hook in self.updates:
            hook.before_update(self.params)
        self.opt.step()
        for hook in self.updates:
            hook.after_update(self.model)
        if self.cfg.calibrated:
            with torch.no_grad():
                self.model.log_sig_x.copy_(terms.log_sig_x)
        self.history.record(pos.step, elbo_g, -loss_g, {k: sums[3 + j].float() / world for j, k in enumerate(extras)})
        pos.step += 1

    def forward_backward(self, x: Tensor, shard: Any, labels: Tensor | None = None) -> tuple[Any, Tensor]:
        """The objective's per-image terms on this process's images (and their labels [B_local], for a conditional
        model), and the gradient of the global batch's mean loss."""
        cfg, k, device = self.cfg, self.model.latent_dim, self.rt.device
        # the samples of z: noise drawn for the whole global batch, this process keeping its slice
        eps = shard.draw(lambda b: torch.empty((self.objective.samples, b, k), device=device).normal_(), dim=1)  # [N, B, K]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.rt.autocast_dtype is not None):
            terms = self.step_fn(
                x, beta=kl_beta(cfg, self.pos.step), calibrated=cfg.calibrated, eps=eps, batch_mean=shard.mean,
                dataset_size=self.data.n_images, **({} if labels is None else {"labels": labels}),
            )
        # DDP averages gradients over processes: world / B_global x local sum gives the global batch's mean
        loss = terms.loss.float().sum() / shard.size * self.rt.world
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return terms, loss

    # ------------------------------------------------------------------ bookkeeping

    def epoch_stats(self, epoch: int) -> dict[str, Any]:
        """``fit``'s epoch stats (see there) for epoch ``epoch``, ending now."""
        pos, model = self.pos, self.model
        means = self.history.epoch_means(pos.epoch_start_step, pos.step)
        return {
            "train_elbo": means.pop("train_elbo"),
            "sigma_x": model.log_sig_x.exp().item() if model.likelihood.has_scale else float("nan"),
            "steps": pos.step, "skipped": pos.skipped, "seconds": self.clock.seconds(),
            "final": self.stop.is_final(epoch, pos.step),  # the run's last epoch: the epochs, the step limit or the budget end here
            "precision": self.rt.precision,
            **means,  # train_objective, train_<extra term>
        }

    def agree(self, values: list[Tensor]) -> Tensor:
        """Sum over processes of [*values, SIGINT seen, SIGTERM seen, seconds] (float64, on the device)."""
        local = self.stop.local(self.rt.device)  # [3]
        if values:
            local = torch.cat([torch.stack(values).to(torch.float64), local])
        return self.rt.all_reduce_sum(local)  # [len(values) + 3]

    def emit(self, event: str, *args: Any, paused: bool = False) -> None:
        """Call ``event`` on every callback that has it (with the clock paused if ``paused``)."""
        with self.clock.paused() if paused else contextlib.nullcontext():
            for cb in self.callbacks:
                fn = getattr(cb, event, None)
                if fn is not None:
                    fn(self, *args)

    def state(self, finished: bool = False) -> TrainState:
        """The state to resume from (raises first if a step since the last check was non-finite)."""
        self.guard.check(self.pos.step, self.pos.epoch)  # never save a state that came from a non-finite step
        self.pos.seconds = self.clock.seconds()
        return TrainState(
            **vars(self.pos.position()), finished=finished, world_size=self.rt.world, **self.history.saved(self.pos.step),
            optimizer=copy.deepcopy(self.opt.state_dict()), rng=capture_rng(),
        )

