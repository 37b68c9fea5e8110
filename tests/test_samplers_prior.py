"""The prior sampler: after the same seed, the numbers generate_images draws."""

from __future__ import annotations

import torch

from vaekit import generate_images, set_seed
from vaekit.samplers import decode_samples
from vaekit.samplers.prior import PriorSampler

from helpers import tiny


def test_the_prior_samplers_images_are_generate_images_after_the_seed():
    model = tiny(K=2)
    images = decode_samples(model, PriorSampler().sample_z(model, 6, seed=4))
    set_seed(4)
    torch.testing.assert_close(images, generate_images(model, n_images=6), rtol=0, atol=0)
    assert PriorSampler().default_file(4) == "samples_seed4.png"
