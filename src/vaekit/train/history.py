"""The per-step history of a run, kept on the device: the ELBO, the training objective where it is not
the ELBO, and each of the objective's own terms (``Terms.extra``). Epoch means become ``fit``'s epoch
stats (``train_elbo``, ``train_objective``, ``train_<name>``); the history goes into the checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["History", "RESERVED_NAMES"]

#: names an objective's extra term may not take: its stat would hide one that training always writes
RESERVED_NAMES = frozenset({"elbo", "objective"})


class History:
    """Per-step values [total] on ``device``; step ``s`` is written once, when it is taken."""

    def __init__(self, total: int, device: torch.device, track_objective: bool):
        self.total, self.device = total, device
        self.elbos = torch.zeros(total, device=device)  # [steps] per-step ELBO, nats per image
        self.objectives = torch.zeros(total, device=device) if track_objective else None  # [steps] -loss
        self.extras: dict[str, Tensor] = {}  # name -> [steps], NaN where not recorded

    def record(self, step: int, elbo: Tensor, objective: Tensor, extras: dict[str, Tensor]) -> None:
        """Step ``step``'s global-batch means (0-d tensors on the device: no host sync)."""
        self.elbos[step] = elbo
        if self.objectives is not None:
            self.objectives[step] = objective
        for name, value in extras.items():
            self._extra(name)[step] = value

    def _extra(self, name: str) -> Tensor:
        if name not in self.extras:
            if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
                raise ValueError(
                    f"the objective's extra term {name!r} needs a name that is a Python identifier other than "
                    f"{', '.join(sorted(RESERVED_NAMES))} (it is logged as train_<name>)"
                )
            self.extras[name] = torch.full((self.total,), float("nan"), device=self.device)  # [steps]
        return self.extras[name]

    def epoch_means(self, start: int, stop: int) -> dict[str, float]:
        """Means over steps [start, stop): train_elbo, train_objective (if tracked), train_<name> (NaN if none)."""

        def mean(values: Tensor) -> float:
            part = values[start:stop]
            return part.mean().item() if len(part) else float("nan")

        out = {"train_elbo": mean(self.elbos)}
        if self.objectives is not None:
            out["train_objective"] = mean(self.objectives)
        out.update({f"train_{name}": mean(values) for name, values in self.extras.items()})
        return out

    def restore(self, state: Any) -> None:
        """The first ``state.step`` steps from a saved ``TrainState`` (a checkpoint without a training
        objective held the ELBO; one without extra terms, none)."""
        step = state.step
        self.elbos[:step] = state.elbos[:step].to(self.device)
        if self.objectives is not None:
            past = state.objective if state.objective is not None else state.elbos
            self.objectives[:step] = past[:step].to(self.device)
        for name, values in state.extras.items():
            self._extra(name)[:step] = values[:step].to(self.device)

    def saved(self, step: int) -> dict[str, Any]:
        """The first ``step`` steps on the CPU, as ``TrainState`` holds them (elbos, objective, extras)."""
        return {
            "elbos": self.elbos[:step].detach().cpu().clone(),
            "objective": None if self.objectives is None else self.objectives[:step].detach().cpu().clone(),
            "extras": {name: values[:step].detach().cpu().clone() for name, values in self.extras.items()},
        }

    def lists(self, step: int) -> dict[str, Any]:
        """The first ``step`` steps as lists, as ``FitResult`` holds them."""
        return {
            "batch_elbos": self.elbos[:step].tolist(),
            "batch_objectives": None if self.objectives is None else self.objectives[:step].tolist(),
            "batch_extras": {name: values[:step].tolist() for name, values in self.extras.items()},
        }
