"""Conditions: what a conditional VAE is given besides z. One file per condition in this package, each a
``Condition`` registered in ``CONDITIONS`` (``--condition NAME``), with its own ``Options`` (``--quadrants 2``).

A conditional VAE (Sohn et al. 2015, Sec. 4; Kingma et al. 2014's M2 with the label observed) has a
recognition network q(z|x, c), a generation network p(x|z, c) and the prior p(z) = N(0, I), which does
not see c (Sohn et al.'s footnote 1 allows a prior independent of the input). Its bound is

    log p(x|c) >= E_q(z|x,c) log p(x|z, c) - KL(q(z|x, c) || p(z))      (Sohn et al. 2015, eq. 4)

A condition turns a batch (images x [B, C, H, W], labels [B]) into the condition vector c [B, S]
(``vector``), says how the encoder sees c (``channels``: [B, E, H, W], added to x's channels), which
pixels the likelihood scores (``scored``: all, or for the quadrants only the missing ones, so that the
bound is on log p(x_missing | x_given)), and which conditions a user picks from (``choices``: the
classes, or the given parts of test images) for ``vaekit sample``, the figures and the explorer.

How c reaches the networks (``vaekit.conditioning``): the model holds the condition of the batch in
flight, ``with given(model, x, labels): ...``, and its wrapped encoder and decoder read it. Every process
of a data-parallel run holds its own shard's, so the objectives, the trainer and the importance-sampled
log-likelihood run unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor

from ..registry import Part, Registry

__all__ = ["Condition", "CONDITIONS", "make_condition"]


class Condition(Part):
    """A condition c of a conditional VAE: made from a batch's images and labels."""

    #: True if c is made from the labels (then every batch needs them)
    needs_labels = False
    #: the run figure this condition draws (``draw_figure``), next to samples.png
    figure_file = "condition_grid.png"
    #: what one of the ``choices`` is, in a few words ("class", "the given part of")
    choice_title = "condition"

    def __init__(self, options: object | None = None):
        self.options = options if options is not None else self.Options()
        self.image_shape: tuple[int, int, int] | None = None
        self.held: Tensor | None = None  # the condition of the batch in flight [B, S]

    # ---------------------------------------------------------------- what c is

    def bind(self, image_shape: tuple[int, int, int]) -> "Condition":
        """Fix the images' [C, H, W] (a ValueError naming the shape if this condition cannot take it)."""
        self.image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        return self

    @property
    def size(self) -> int:
        """S: the width of c, the decoder's extra inputs."""
        raise NotImplementedError

    @property
    def extra_channels(self) -> int:
        """E: the encoder's extra input channels."""
        raise NotImplementedError

    def vector(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """c [B, S] (x's dtype and device) for images x [B, C, H, W] in [0, 1] and their labels [B] (or None)."""
        raise NotImplementedError

    def channels(self, c: Tensor) -> Tensor:
        """c [B, S] as the encoder's extra input channels [B, E, H, W]."""
        raise NotImplementedError

    def scored(self) -> Tensor | None:
        """The pixels the likelihood scores, a bool mask [C*H*W] (row-major, as x.flatten(1)); None: all of them."""
        return None

    def quantity(self) -> str:
        """What the model's log-likelihood is, e.g. "log p(x | y)"."""
        return "log p(x | c)"

    def describe(self) -> str:
        """One line: the condition and its size."""
        return f"condition {self.name} (c of {self.size} numbers)"

    @classmethod
    def options_from_data(cls, given: dict[str, Any], data: Any) -> dict[str, Any]:
        """The options that come from the training data (``given``: those set by the user); {} by default."""
        return {}

    # ---------------------------------------------------------------- what a user picks from

    def choices(self, images: Tensor, labels: Tensor | None) -> tuple[list[str], Tensor]:
        """The conditions to pick from: (names, c [n, S]), e.g. every class; images [M, C, H, W] in [0, 1] and
        labels [M] are the test set's first images, for conditions made from images."""
        raise NotImplementedError

    def find(self, text: str, names: list[str]) -> int:
        """The index of the choice named ``text`` (or numbered so); a ValueError listing the names."""
        if text in names:
            return names.index(text)
        if text.strip().lstrip("-").isdigit() and 0 <= int(text) < len(names):
            return int(text)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ValueError(f"--label {text!r} is not a {self.choice_title} of this run's condition {self.name} ({shown}; or 0..{len(names) - 1})")

    def display(self, c: Tensor, images: Tensor) -> Tensor:
        """What to show for mean images [B, C, H, W] decoded with conditions c [B, S]: the images themselves (the
        quadrants show the given part in place)."""
        return images

    def shown(self, images: Tensor) -> Tensor:
        """``display`` of mean images [B', C, H, W] decoded with the condition held (B' = B images x n samples)."""
        return self.display(self.held_rows(images.shape[0]).to(images), images)

    def draw_figure(self, model: Any, images: Tensor, labels: Tensor | None, path: Any, seed: int) -> None:
        """The run figure ``figure_file``: every choice across rows, z ~ N(0, I) shared along each column."""
        from ..conditional_images import draw_choice_grid

        draw_choice_grid(model, images, labels, path, seed)

    # ---------------------------------------------------------------- the condition of the batch in flight

    def holding(self, x: Tensor, labels: Tensor | None = None) -> Any:
        """A context manager that holds c of images x [B, C, H, W] (and labels [B]) for the networks while its
        block runs (nested holds restore the outer one)."""
        if self.needs_labels and labels is None:
            raise ValueError(f"condition {self.name} is made from the images' labels; none were given (labels [B])")
        if labels is not None and labels.shape[:1] != x.shape[:1]:
            raise ValueError(f"labels must have shape [B={x.shape[0]}], got {list(labels.shape)}")
        return self.holding_vector(self.vector(x, None if labels is None else labels.to(x.device)))

    @contextmanager
    def holding_vector(self, c: Tensor) -> Iterator[Tensor]:
        """Hold a given condition vector c [B, S] while the block runs."""
        if c.ndim != 2 or c.shape[1] != self.size:
            raise ValueError(f"a condition vector of {self.name} must have shape [B, S={self.size}], got {list(c.shape)}")
        before, self.held = self.held, c
        try:
            yield c
        finally:
            self.held = before

    def held_rows(self, rows: int) -> Tensor:
        """The held c for ``rows`` network inputs [rows, S]: image b's c for its rows b*n..(b+1)*n-1 when the
        B images come with n samples each (``VAE.decode`` flattens z [B, n, K] so)."""
        c = self.held
        if c is None:
            raise ValueError(
                f"this model is conditional ({self.describe()}): its networks run with the condition of their images "
                "held, `with vaekit.conditioning.given(model, x, labels): ...`"
            )
        b = c.shape[0]
        if rows == b:
            return c
        if b == 0 or rows % b != 0:
            raise ValueError(f"the condition held is for {b} images; the networks got {rows} rows, not a multiple of it")
        return c.repeat_interleave(rows // b, dim=0)  # [rows, S]


CONDITIONS: Registry[type[Condition]] = Registry("condition", Condition, package=__name__)


def make_condition(condition: str | Condition, options: dict | None = None) -> Condition:
    """A condition from its registry name and options (or an instance, returned as is)."""
    if isinstance(condition, Condition):
        return condition
    return CONDITIONS[condition](CONDITIONS.options(condition, options))


def one_hot(index: Tensor, n: int, like: Tensor) -> Tensor:
    """Rows of the identity [B, n] in ``like``'s dtype and device for integer indices [B] in 0..n-1."""
    return torch.nn.functional.one_hot(index.long().to(like.device), n).to(like.dtype)
