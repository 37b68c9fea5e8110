"""Part of the image as the condition: --quadrants N of its four quadrants are given, the model predicts the others
(Sohn et al. 2015, Sec. 5.1: "predict the missing quadrants from 1, 2 or 3 given quadrants" on MNIST).

c = the given quadrants' pixels, the missing ones 0 [B, C*H*W]; the likelihood scores the missing pixels only, so
that the model's log-likelihood is log p(x_missing | x_given), the paper's conditional log-likelihood (CLL). The
layout is fixed per model, as in Pyro's reading of the paper's Fig. 3: 1 quadrant = the bottom left, 2 = the left
half, 3 = all but the bottom right (rows >= H // 2 are the bottom, columns < W // 2 the left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..registry import option
from . import CONDITIONS, Condition

#: the given quadrants by N: (top left, top right, bottom left, bottom right)
LAYOUT = {1: (False, False, True, False), 2: (True, False, True, False), 3: (True, True, True, False)}


@CONDITIONS.register
class Quadrants(Condition):
    """quadrants: --quadrants N of the image's quadrants are given, the rest is predicted: log p(x_missing | x_given)"""

    name = "quadrants"
    figure_file = "completions.png"
    choice_title = "the given part of"

    @dataclass
    class Options:
        quadrants: int = option(1, "quadrants given: 1 (the bottom left), 2 (the left half) or 3 (all but the bottom right)", choices=(1, 2, 3))

    def bind(self, image_shape: tuple[int, int, int]) -> "Quadrants":
        c, h, w = image_shape
        if h < 2 or w < 2:
            raise ValueError(f"condition quadrants needs images of at least 2x2 pixels, got {h}x{w}")
        return super().bind(image_shape)  # type: ignore[return-value]

    def given_mask(self) -> Tensor:
        """True where a pixel is given: bool [C, H, W]."""
        c, h, w = self.image_shape  # type: ignore[misc]
        top_left, top_right, bottom_left, bottom_right = LAYOUT[self.options.quadrants]
        mask = torch.zeros(c, h, w, dtype=torch.bool)
        mask[:, : h // 2, : w // 2] = top_left
        mask[:, : h // 2, w // 2 :] = top_right
        mask[:, h // 2 :, : w // 2] = bottom_left
        mask[:, h // 2 :, w // 2 :] = bottom_right
        return mask

    @property
    def size(self) -> int:
        c, h, w = self.image_shape  # type: ignore[misc]
        return c * h * w

    @property
    def extra_channels(self) -> int:
        return self.image_shape[0]  # type: ignore[index]

    def vector(self, x: Tensor, labels: Tensor | None) -> Tensor:
        given = self.given_mask().to(x.device)
        return torch.where(given, x, torch.zeros((), dtype=x.dtype, device=x.device)).flatten(1)  # [B, C*H*W]

    def channels(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], *self.image_shape)  # type: ignore[misc]  # [B, C, H, W]

    def scored(self) -> Tensor:
        return ~self.given_mask().flatten()  # [C*H*W]: the missing pixels

    def quantity(self) -> str:
        return "log p(x_missing | x_given)"

    def describe(self) -> str:
        q = self.options.quadrants
        return f"condition quadrants ({q} quadrant{'s' * (q > 1)} given, {int(self.scored().sum())} pixels predicted)"

    def choices(self, images: Tensor, labels: Tensor | None) -> tuple[list[str], Tensor]:
        """The given parts of the first (up to) 10 test images."""
        x = images[:10]
        names = [f"test image {i}" + (f" (label {int(labels[i])})" if labels is not None and int(labels[i]) >= 0 else "") for i in range(len(x))]
        return names, self.vector(x, None)

    def display(self, c: Tensor, images: Tensor) -> Tensor:
        given = self.given_mask().to(images.device)
        return torch.where(given, self.channels(c).to(images), images)  # the given part as it is

    def draw_figure(self, model: Any, images: Tensor, labels: Tensor | None, path: Any, seed: int) -> None:
        """completions.png: test images' given part | completions, z ~ N(0, I) shared along each column | the truth."""
        from ..conditional_images import draw_completions

        draw_completions(model, images, labels, path, seed)
