"""The label condition: c is the one-hot of the label (against rows of the identity), the encoder's planes are c, the
classes and their names come from the data (class folders, Fashion-MNIST's names, numbers), unlabelled data and
labels out of range are refused, and a trained model's images follow the label: decoded at z = 0, each class's image
is nearer its own class's mean image than the other class's."""

from __future__ import annotations

import json

import pytest
import torch

from vaekit import TrainConfig, fit, set_seed
from vaekit.conditioning import given
from vaekit.conditions import make_condition
from vaekit.conditions.label import FASHION_MNIST_CLASSES
from vaekit.config import ModelConfig
from vaekit.data import DatasetInfo, ImageData
from vaekit.model import build_model


def label(n=4, names=""):
    return make_condition("label", {"classes": n, "class_names": names}).bind((1, 3, 5))


def data(labels, name="toy", **info):
    n = len(labels)
    images = torch.zeros(n, 1, 3, 5, dtype=torch.uint8)
    return ImageData(name, train_uint8=images, train_labels=torch.tensor(labels), test_uint8=images[:2],
                     test_labels=torch.tensor(labels[:2]), info=DatasetInfo(**info))


def test_c_is_the_one_hot_label_and_the_encoder_sees_it_as_constant_planes():
    cond = label(4)
    y = torch.tensor([3, 0, 2, 2])
    x = torch.rand(4, 1, 3, 5, dtype=torch.float64)
    c = cond.vector(x, y)
    torch.testing.assert_close(c, torch.eye(4, dtype=torch.float64)[y])
    planes = cond.channels(c)  # [B, 4, 3, 5]
    assert planes.shape == (4, 4, 3, 5)
    torch.testing.assert_close(planes.amax(dim=(2, 3)), c)
    torch.testing.assert_close(planes.amin(dim=(2, 3)), c)
    assert cond.size == cond.extra_channels == 4 and cond.scored() is None
    names, vectors = cond.choices(x, None)
    assert names == ["0", "1", "2", "3"] and torch.equal(vectors, torch.eye(4))


@pytest.mark.parametrize("bad", [-1, 4])
def test_labels_out_of_range_and_a_missing_class_count_are_refused(bad):
    with pytest.raises(ValueError, match=f"takes labels 0..3, got {bad}"):
        label(4).vector(torch.rand(2, 1, 3, 5), torch.tensor([0, bad]))
    with pytest.raises(ValueError, match="needs --classes"):
        _ = make_condition("label").size
    with pytest.raises(ValueError, match="class_names must be a JSON list of 4 strings"):
        label(4, json.dumps(["a", "b"])).names()


def test_classes_and_names_come_from_the_data():
    from vaekit.conditions.label import Label

    assert Label.options_from_data({}, data([0, 4, 1])) == {"classes": 5, "class_names": json.dumps(["0", "1", "2", "3", "4"])}
    folders = data([1, 0, 1], class_labels={"cat": 0, "dog": 1}, classes=["cat", "dog"])
    assert json.loads(Label.options_from_data({}, folders)["class_names"]) == ["cat", "dog"]
    fashion = data(list(range(10)), name="fashion-mnist")
    assert json.loads(Label.options_from_data({}, fashion)["class_names"]) == list(FASHION_MNIST_CLASSES)
    assert Label.options_from_data({"classes": 7}, data([0, 1]))["classes"] == 7  # more classes than seen: kept
    with pytest.raises(ValueError, match="--classes 2 is fewer than the labels of toy, 0..4"):
        Label.options_from_data({"classes": 2}, data([0, 4]))
    with pytest.raises(ValueError, match="needs labelled images; toy has none"):
        Label.options_from_data({}, data([-1, -1], labelled=False))
    cfg = ModelConfig(condition="label").resolved((1, 3, 5), folders)
    assert cfg.options == {"classes": 2, "class_names": json.dumps(["cat", "dog"])} and cfg.arch == "conv"
    assert make_condition("label", cfg.options).find("dog", ["cat", "dog"]) == 1


@pytest.mark.slow  # ~10 s on an idle 2-core CPU: 200 steps of a small MLP
def test_a_trained_models_images_follow_the_label(mnist):
    keep = (mnist.train_labels == 0) | (mnist.train_labels == 1)
    x, y = mnist.train_images[keep][:1000], mnist.train_labels[keep][:1000]
    means = torch.stack([x[y == k].mean(dim=0) for k in (0, 1)])  # [2, 1, 28, 28] the classes' mean images
    set_seed(0)
    model = build_model(ModelConfig(arch="mlp", latent_dim=2, condition="label", options={"hidden": "32", "classes": 2}), (1, 28, 28))
    fit(model, x, TrainConfig(epochs=20, batch_size=64, device="cpu", max_steps=200), progress=False, labels=y)
    model.eval()
    with torch.no_grad(), given(model, torch.zeros(2, 1, 28, 28), torch.tensor([0, 1])):
        images = model.mean_image(torch.zeros(2, 1, 2))[:, 0]  # z = 0 decoded as a 0 and as a 1
    dist = ((images[:, None] - means[None]) ** 2).mean(dim=(2, 3, 4))  # [label, class mean]
    assert dist[0, 0] < dist[0, 1] and dist[1, 1] < dist[1, 0], dist
    assert (images[0] - images[1]).abs().mean() > 0.05  # the label changes the image, not only a little
