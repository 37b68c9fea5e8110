"""Progress bars (vaekit.train.progress): the batch bar shows the mean ELBO of the last log_every steps."""

import pytest

from vaekit import TrainConfig, fit

from helpers import grey_images, tiny


class FakeBar:
    made = []

    def __init__(self, *args, **kwargs):
        self.kwargs, self.postfixes, self.n, self.closed = kwargs, [], 0, False
        FakeBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **kw):
        self.postfixes.append(kw)

    def close(self):
        self.closed = True


def test_the_bars_count_batches_and_show_recent_and_epoch_elbos(monkeypatch):
    FakeBar.made = []
    monkeypatch.setattr("vaekit.train.progress.tqdm", FakeBar)
    cfg = TrainConfig(epochs=2, batch_size=4, samples=1, device="cpu")  # 7 steps per epoch
    result = fit(tiny(), grey_images(28), cfg, progress=True, log_every=3)
    epochs, first, second = FakeBar.made
    assert epochs.kwargs["total"] == 2 and epochs.n == 2 and all(b.closed for b in FakeBar.made)
    assert (first.kwargs["total"], first.n, second.n) == (7, 7, 7)
    e = result.batch_elbos
    # every 3 steps: the mean of the last 3 steps of this epoch (steps 3, 6 in epoch 1; 9, 12 in epoch 2, which began at 7)
    want = [sum(e[0:3]) / 3, sum(e[3:6]) / 3]
    assert [float(p["elbo"]) for p in first.postfixes] == pytest.approx(want, abs=0.051)
    want = [sum(e[7:9]) / 2, sum(e[9:12]) / 3]
    assert [float(p["elbo"]) for p in second.postfixes] == pytest.approx(want, abs=0.051)
    assert [float(p["elbo"]) for p in epochs.postfixes] == pytest.approx([sum(e[:7]) / 7, sum(e[7:]) / 7], abs=0.051)
