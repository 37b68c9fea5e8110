"""Images of a conditional model (vaekit.conditional_images): the class grid has every class across rows and the same
z down each column (against decoding each image alone), ``vaekit sample --label`` draws that class only (against the
sampler's own z decoded with it), the .npy is the mean images as round(255 clamp(x)) in uint8, the quadrants'
completions show the given part as it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaekit.conditional_images import choice_grid, conditional_samples, draw_choice_grid, draw_completions, save_images
from vaekit.conditioning import given
from vaekit.config import ModelConfig
from vaekit.model import build_model
from vaekit.samplers import make_sampler


def model(condition="label", **options):
    torch.manual_seed(0)
    options = {"hidden": "16", **({"classes": 3} if condition == "label" else {}), **options}
    return build_model(ModelConfig(arch="mlp", latent_dim=2, condition=condition, options=options), (1, 6, 8)).eval()


def decode_alone(m, z, label=None, x=None):
    """One image decoded from z [K] with the class ``label`` (or image x's condition), by itself."""
    x = torch.zeros(1, 1, 6, 8) if x is None else x[None]
    with torch.no_grad(), given(m, x, None if label is None else torch.tensor([label])):
        return m.condition.shown(m.mean_image(z[None, None])[:, 0])[0]


def test_the_class_grid_has_every_class_across_rows_and_the_same_z_down_each_column():
    m = model()
    grid = choice_grid(m, torch.eye(3), cols=4, seed=5)  # [3, 4, 1, 6, 8]
    torch.manual_seed(5)
    z = m.sample_z(4)  # the documented draw: the seed, then z ~ p(z)
    assert grid.shape == (3, 4, 1, 6, 8)
    for r in range(3):
        for j in range(4):
            torch.testing.assert_close(grid[r, j], decode_alone(m, z[j], label=r))
    assert not torch.allclose(grid[0], grid[1])


def test_sample_label_draws_that_class_and_without_it_every_class(tmp_path):
    m = model()
    images, labels = torch.rand(5, 1, 6, 8), torch.tensor([0, 1, 2, 0, 1])
    sampler = make_sampler("prior")
    out, nrow, title = conditional_samples(m, images, labels, sampler, 5, 3, "2")
    z = sampler.sample_z(m, 5, 3)
    assert out.shape == (5, 1, 6, 8) and nrow == 3 and "class 2" in title
    for i in range(5):
        torch.testing.assert_close(out[i], decode_alone(m, z[i], label=2))
    grid, cols, _ = conditional_samples(m, images, labels, sampler, 7, 3, None)
    assert cols == 2 and grid.shape == (6, 1, 6, 8)  # 3 classes x 7 // 3 columns
    with pytest.raises(ValueError, match="--label 'dog' is not a class"):
        conditional_samples(m, images, labels, sampler, 5, 3, "dog")


def test_images_are_saved_as_a_grid_or_as_uint8(tmp_path):
    images = torch.tensor([-0.2, 0.0, 0.5, 0.998, 1.3, 0.25]).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    save_images(images, tmp_path / "a.npy", 2, "t")
    array = np.load(tmp_path / "a.npy")
    assert array.dtype == np.uint8 and array.shape == (2, 1, 2, 3)
    assert array[0, 0].tolist() == [[0, 0, 128], [254, 255, 64]]  # round(255 * clamp(x, 0, 1)), by hand
    assert save_images(images, tmp_path / "a.png", 2, "t").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"must end in \.png .* or \.npy"):
        save_images(images, tmp_path / "a.jpg", 2, "t")


def test_the_figures_draw_and_completions_keep_the_given_part(tmp_path):
    m = model()
    images, labels = torch.rand(4, 1, 6, 8), torch.tensor([0, 1, 2, 0])
    draw_choice_grid(m, images, labels, tmp_path / "grid.png", seed=0)
    q = model("quadrants", quadrants=2)
    draw_completions(q, images, labels, tmp_path / "completions.png", seed=0)
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("grid.png", "completions.png"))
    rows = choice_grid(q, q.condition.vector(images, None), cols=3, seed=0)  # [4, 3, 1, 6, 8]
    given_part = q.condition.given_mask()
    for r in range(4):
        torch.testing.assert_close(rows[r][:, given_part], images[r][given_part].expand(3, -1))
