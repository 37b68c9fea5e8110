"""What may change an optimizer step beyond the gradient itself: ``UpdateHook``s, called by the loop just
before and after ``optimizer.step()``, each one collaborator (gradient normalization and clipping here; an EMA of
the weights would be another: ``after_update`` and a state in the checkpoint)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["UpdateHook", "GradNormalize", "GradClip", "update_hooks"]


class UpdateHook:
    """Called around each optimizer step that is applied (never for a skipped, non-finite batch)."""

    def before_update(self, params: Sequence[Tensor]) -> None:
        """The gradients are final (and, data-parallel, averaged over processes); the weights not yet changed."""

    def after_update(self, model: nn.Module) -> None:
        """The optimizer has updated the weights."""


class GradNormalize(UpdateHook):
    """Divide each parameter tensor's gradient by its own norm (``--grad-normalize``): g_p <- g_p / (||g_p||_2 + 1e-7),
    as Tomczak & Welling's ``AdamNormGrad`` (jmtomczak/vae_vampprior, utils/optimizer.py) does before Adam's moments.

    A spike in one batch's gradient then moves Adam's moment estimates no more than any other batch does: the
    VampPrior's recipe. Every process holds the same averaged gradients, so all normalize alike.
    """

    EPS = 1e-7

    def before_update(self, params: Sequence[Tensor]) -> None:
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + self.EPS)


class GradClip(UpdateHook):
    """Clip the global gradient norm (all parameters as one vector) to ``max_norm`` (``--grad-clip``):
    g <- g * min(1, max_norm / (||g|| + 1e-6)), as ``torch.nn.utils.clip_grad_norm_``.

    Every process holds the same averaged gradients, so all clip alike.
    """

    def __init__(self, max_norm: float):
        if not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"grad_clip must be a finite number > 0 (or None for no clipping), got {max_norm!r}")
        self.max_norm = float(max_norm)
        self.last_norm: Tensor | None = None  # the norm before clipping at the last step (on the device)

    def before_update(self, params: Sequence[Tensor]) -> None:
        self.last_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)


def update_hooks(cfg: object) -> list[UpdateHook]:
    """The hooks ``cfg`` asks for, in the order they act (none by default): normalize, then clip."""
    clip = getattr(cfg, "grad_clip", None)
    hooks: list[UpdateHook] = [GradNormalize()] if getattr(cfg, "grad_normalize", False) else []
    return hooks + ([] if clip is None else [GradClip(clip)])
