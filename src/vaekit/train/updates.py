"""What may change an optimizer step beyond the gradient itself: ``UpdateHook``s, called by the loop just
before and after ``optimizer.step()``, each one collaborator (e.g. gradient clipping, or an EMA of the
weights: ``after_update`` and a state in the checkpoint)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["UpdateHook", "update_hooks"]


class UpdateHook:
    """Called around each optimizer step that is applied (never for a skipped, non-finite batch)."""

    def before_update(self, params: Sequence[Tensor]) -> None:
        """The gradients are final (and, data-parallel, averaged over processes); the weights not yet changed."""

    def after_update(self, model: nn.Module) -> None:
        """The optimizer has updated the weights."""


def update_hooks(cfg: object) -> list[UpdateHook]:
    """The hooks ``cfg`` asks for (none yet)."""
    return []
