"""Generated images as uint8 arrays (vaekit.generated): the quantization against numpy's, the draw against
generate_images after the same seed (whatever the decode batch), and the .npy written atomically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaekit import generate_images, set_seed
from vaekit.generated import draw_uint8, save_npy, to_uint8
from vaekit.samplers.prior import PriorSampler

from helpers import tiny


def numpy_uint8(images: torch.Tensor) -> np.ndarray:
    """The reference: round(255 * clip(x, 0, 1)) in float64 numpy (round half to even, as torch)."""
    return np.round(np.clip(images.double().numpy(), 0, 1) * 255).astype(np.uint8)


def test_to_uint8_is_round_255_x_of_the_clamped_images():
    edges = torch.tensor([0.0, 1.0, -3.0, 7.0, 0.5, 1 / 255, 254.4 / 255, 254.6 / 255, 0.25, 0.75]).reshape(1, 1, 2, 5)
    x = torch.cat([torch.rand(3, 1, 2, 5, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2, edges])  # [4, 1, 2, 5]
    u8 = to_uint8(x)
    assert u8.dtype == torch.uint8 and u8.shape == x.shape
    np.testing.assert_array_equal(u8.numpy(), numpy_uint8(x))
    assert u8.flatten()[torch.argmax(x.flatten())] == 255 and u8.flatten()[torch.argmin(x.flatten())] == 0


def test_to_uint8_refuses_integers():
    with pytest.raises(ValueError, match="images must be a float tensor"):
        to_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


def test_the_prior_draw_is_generate_images_after_the_seed_in_any_batch_size():
    model = tiny(K=2)
    set_seed(7)
    reference = generate_images(model, n_images=11)  # [11, 1, 12, 12] floats, one decode
    whole = draw_uint8(model, PriorSampler(), 11, seed=7, batch_size=500)
    assert whole.dtype == torch.uint8 and whole.shape == (11, 1, 12, 12)
    np.testing.assert_array_equal(whole.numpy(), numpy_uint8(reference))
    batched = draw_uint8(model, PriorSampler(), 11, seed=7, batch_size=3)  # 3 + 3 + 3 + 2
    # the same codes; only the decoder's round-off may differ between batch sizes: within the rounding of the reference
    gap = np.abs(batched.numpy().astype(np.float64) - 255 * np.clip(reference.double().numpy(), 0, 1))
    assert gap.max() <= 0.5 + 1e-3
    assert not torch.equal(whole, draw_uint8(model, PriorSampler(), 11, seed=8))


@pytest.mark.parametrize("n, batch_size, needle", [(0, 5, "n (the number of images) must be an int >= 1, got 0"),
                                                    (3, 0, "batch_size must be an int >= 1, got 0"),
                                                    (2.5, 5, "got 2.5")])
def test_bad_counts_are_refused_naming_them(n, batch_size, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        draw_uint8(tiny(K=2), PriorSampler(), n, seed=0, batch_size=batch_size)


def test_save_npy_writes_the_array_atomically_and_refuses_other_files(tmp_path):
    images = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    path = save_npy(tmp_path / "x.npy", images)
    loaded = np.load(path, allow_pickle=False)
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 3, 5, 6)
    np.testing.assert_array_equal(loaded, images.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # no temporary file left
    with pytest.raises(ValueError, match=r"must end in \.npy, got '.*x\.npz'"):
        save_npy(tmp_path / "x.npz", images)
    with pytest.raises(ValueError, match=r"uint8 tensor \[N, C, H, W\], got torch.float32"):
        save_npy(tmp_path / "y.npy", images.float())
