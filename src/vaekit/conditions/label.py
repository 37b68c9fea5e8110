"""The class label as the condition: c = one-hot(y) [B, N] of N classes (Sohn et al. 2015; Kingma et al. 2014's M2
with y observed). "Draw me a 7": ``vaekit sample RUN --label 7``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..registry import option
from . import CONDITIONS, Condition, one_hot

#: Fashion-MNIST's class names by label (Xiao et al. 2017), which its IDX files do not hold
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@CONDITIONS.register
class Label(Condition):
    """label: the image's class, one-hot: q(z|x, y), p(x|z, y) (the class folders of an image folder, or MNIST's labels)"""

    name = "label"
    needs_labels = True
    figure_file = "class_grid.png"
    choice_title = "class"

    @dataclass
    class Options:
        classes: int | None = option(None, "number of classes (default: from the dataset's labels)", min=1)
        class_names: str = option(
            "", "the classes' names as a JSON list, by label (default: the class folders, Fashion-MNIST's names, else the numbers)"
        )

    @property
    def n_classes(self) -> int:
        if self.options.classes is None:
            raise ValueError("condition label needs --classes (the number of classes); vaekit train takes it from the dataset's labels")
        return int(self.options.classes)

    @property
    def size(self) -> int:
        return self.n_classes

    @property
    def extra_channels(self) -> int:
        return self.n_classes  # one constant plane per class

    def names(self) -> list[str]:
        """The classes' names by label: ``class_names``, else the numbers."""
        if not self.options.class_names:
            return [str(i) for i in range(self.n_classes)]
        try:
            names = json.loads(self.options.class_names)
        except json.JSONDecodeError as e:
            raise ValueError(f"class_names must be a JSON list of {self.n_classes} strings, got {self.options.class_names!r}: {e}") from None
        if not isinstance(names, list) or len(names) != self.n_classes or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be a JSON list of {self.n_classes} strings, got {self.options.class_names!r}")
        return names

    def vector(self, x: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ValueError("condition label is made from the images' labels; none were given")
        bad = (labels < 0) | (labels >= self.n_classes)
        if bool(bad.any()):
            raise ValueError(f"condition label takes labels 0..{self.n_classes - 1}, got {int(labels[bad][0])} (-1: an unlabelled image)")
        return one_hot(labels, self.n_classes, x)  # [B, N]

    def channels(self, c: Tensor) -> Tensor:
        _, h, w = self.image_shape  # type: ignore[misc]
        return c[:, :, None, None].expand(c.shape[0], c.shape[1], h, w)  # [B, N, H, W]

    def quantity(self) -> str:
        return "log p(x | y)"

    def describe(self) -> str:
        return f"condition label ({self.n_classes} classes)"

    def choices(self, images: Tensor, labels: Tensor | None) -> tuple[list[str], Tensor]:
        return self.names(), torch.eye(self.n_classes)  # every class, one-hot [N, N]

    @classmethod
    def options_from_data(cls, given: dict[str, Any], data: Any) -> dict[str, Any]:
        """The number of classes and their names from the dataset (a ValueError for data without labels)."""
        if not data.info.labelled:
            raise ValueError(f"--condition label needs labelled images; {data.name} has none (an image folder needs a subfolder per class)")
        top = int(max(int(data.train_labels.max()), int(data.test_labels.max()))) + 1
        classes = given.get("classes") or top
        if classes < top:
            raise ValueError(f"--classes {classes} is fewer than the labels of {data.name}, 0..{top - 1}")
        names = given.get("class_names") or json.dumps(_class_names(data, classes))
        return {"classes": classes, "class_names": names}


def _class_names(data: Any, n: int) -> list[str]:
    """The names of labels 0..n-1: the class folders' (by their labels), Fashion-MNIST's, else the numbers."""
    names = [str(i) for i in range(n)]
    by_label = data.info.class_labels or {}
    for name, label in by_label.items():
        if 0 <= int(label) < n:
            names[int(label)] = str(name)
    if not by_label and data.name == "fashion-mnist" and n == len(FASHION_MNIST_CLASSES):
        names = list(FASHION_MNIST_CLASSES)
    return names
