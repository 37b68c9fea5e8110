"""When checkpoints are written (vaekit.train.checkpoints): every N steps, at the end of each epoch that ran to
its end, on a signal (tests/test_train_stop.py) and once at the end; checked against a plain simulation."""

import math

import pytest

from vaekit import TrainConfig, fit
from vaekit.train.checkpoints import Checkpoints

from helpers import grey_images, tiny


def expected_checkpoints(n_images, batch_size, epochs, every=None, max_steps=None):
    """(step, epoch, batch, finished) of each checkpoint, by walking the batches one by one."""
    steps_per_epoch = math.ceil(n_images / batch_size)
    total = min(epochs * steps_per_epoch, max_steps or math.inf)
    out, step = [], 0
    for epoch in range(epochs):
        for batch in range(steps_per_epoch):
            if step >= total:  # the step limit: the last checkpoint is where it stopped
                return out + [(step, epoch, batch, True)]
            step += 1
            if every and step % every == 0:
                out.append((step, epoch, batch + 1, False))
        out.append((step, epoch + 1, 0, False))  # the epoch ran to its end: the next one's start
    return out + [(step, epochs, 0, True)]


@pytest.mark.parametrize("epochs, every, max_steps", [
    (3, None, None), (3, 3, None), (2, 1, None), (3, 4, None), (3, 5, None),  # 4 steps per epoch
    (3, 3, 6), (3, None, 6), (3, 2, 8), (3, None, 4),  # limits mid-epoch and on an epoch boundary
])
def test_checkpoints_are_written_where_a_plain_walk_over_the_batches_says(epochs, every, max_steps):
    saved = []
    cfg = TrainConfig(epochs=epochs, batch_size=4, samples=1, checkpoint_every=every, max_steps=max_steps, device="cpu")
    fit(tiny(), grey_images(14), cfg, progress=False,  # 14 images, batch 4: 4 steps per epoch, the last of 2 images
        on_checkpoint=lambda st: saved.append((st.step, st.epoch, st.batch, st.finished)))
    assert saved == expected_checkpoints(14, 4, epochs, every, max_steps)


def test_each_checkpoint_knows_where_its_epoch_began():
    saved = []
    cfg = TrainConfig(epochs=2, batch_size=4, samples=1, checkpoint_every=3, device="cpu")
    fit(tiny(), grey_images(14), cfg, progress=False, on_checkpoint=lambda st: saved.append((st.step, st.epoch_start_step)))
    assert saved == [(3, 0), (4, 4), (6, 4), (8, 8), (8, 8)]


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1 steps \\(or None\\), got 0"):
        Checkpoints(print, 0)
