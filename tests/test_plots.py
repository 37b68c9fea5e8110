"""The figures of the latent space: each is a real PNG of a sensible size, not a blank canvas."""

import matplotlib.image
import pytest
import torch

import vaekit.plots as plots
from vaekit.latents import interpolate, latent_grid

from helpers import grey_images, rand, tiny

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_side=60, max_side=3000):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert min_side <= h <= max_side and min_side <= w <= max_side, img.shape
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return h, w


def test_plot_reconstructions_writes_a_png(tmp_path):
    images = grey_images(5, seed=21)
    path = tmp_path / "recon.png"
    plots.plot_reconstructions(images, 1 - images, path, cols=4)
    check_png(path)
    with pytest.raises(ValueError, match="recon"):
        plots.plot_reconstructions(images, images[:4], tmp_path / "bad.png")


def test_plot_latent_map_writes_a_png(tmp_path):
    images, what = latent_grid(tiny(), 4)
    path = tmp_path / "map.png"
    plots.plot_latent_map(images, path, what)
    h, w = check_png(path)
    assert 0.7 < h / w < 1.5  # a square grid


@pytest.mark.parametrize("with_labels", [True, False])
def test_plot_latent_scatter_writes_a_png_with_a_legend_of_labels(tmp_path, monkeypatch, with_labels):
    figures = []
    original = plots.save_figure

    def spy(fig, path, *args, **kwargs):
        figures.append(fig)
        original(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure", spy)
    points = rand(60, 2, seed=22).float()
    labels = torch.tensor([7, 2, 5] * 20) if with_labels else None
    path = tmp_path / "scatter.png"
    plots.plot_latent_scatter(points, labels, path, title="t")
    check_png(path)
    legend = figures[0].axes[0].get_legend()
    if with_labels:
        assert [t.get_text() for t in legend.get_texts()] == ["2", "5", "7"]
    else:
        assert legend is None


def test_plot_interpolations_writes_a_png(tmp_path):
    model = tiny()
    strips = interpolate(model, grey_images(2, seed=23), grey_images(2, seed=24), steps=6)
    path = tmp_path / "interp.png"
    plots.plot_interpolations(strips, path)
    h, w = check_png(path)
    assert w > h  # 2 rows of 6 images
