"""The training batches (vaekit.train.batches): each epoch's order from (seed, epoch) alone, checked against a
brute-force torch.randperm loop, a resumed epoch going on at the right batch, binarization, the shards."""

import math

import pytest
import torch

from vaekit import TrainConfig, binarize, fit
from vaekit.distributed import BatchShard
from vaekit.train.batches import BatchSource

from helpers import SIZE, grey_images, tiny

CPU = torch.device("cpu")


def source(images, batch_size=4, seed=7, mode="none", world=1):
    return BatchSource(images, batch_size, seed=seed, binarize_mode=mode, device=CPU, world=world)


def brute_force_batches(n, batch_size, seed, epoch):
    """The documented order, written out: randperm from seed * 100003 + epoch, cut into batches."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def test_each_epochs_order_depends_only_on_seed_and_epoch():
    a, b = source(grey_images(30, seed=1)), source(torch.zeros(30, 1, SIZE, SIZE, dtype=torch.uint8))
    for epoch in range(3):
        torch.manual_seed(epoch)  # the global RNG plays no part
        got = [idx for _, idx in a.batches(epoch)]
        torch.manual_seed(1000 + epoch)
        assert all(torch.equal(x, y) for x, y in zip(got, [idx for _, idx in b.batches(epoch)]))
        want = brute_force_batches(30, 4, 7, epoch)
        assert len(got) == len(want) == a.steps_per_epoch == math.ceil(30 / 4)
        assert all(torch.equal(x, y) for x, y in zip(got, want))
    assert not torch.equal(a.order(0), a.order(1)) and not torch.equal(a.order(0), source(grey_images(30), seed=8).order(0))


def test_a_resumed_epoch_goes_on_at_its_batch():
    src = source(grey_images(30))
    want = brute_force_batches(30, 4, 7, 2)
    for start in range(len(want) + 1):
        got = list(src.batches(2, start))
        assert [i for i, _ in got] == list(range(start, len(want)))
        assert all(torch.equal(idx, want[i]) for i, idx in got)


def test_a_global_batch_is_batch_size_times_processes_and_must_fit_the_images():
    assert source(grey_images(30), batch_size=4, world=3).batch_size == 12
    with pytest.raises(ValueError, match=r"batch_size=16 is larger than the 10 training images"):
        source(grey_images(10), batch_size=16)
    with pytest.raises(ValueError, match=r"batch_size=4 \(global batch 12 = batch_size x 3 processes\) is larger than the 10"):
        source(grey_images(10), batch_size=4, world=3)


def test_take_gives_this_process_its_slice_as_float32():
    images = (grey_images(12) * 255).round().to(torch.uint8)
    src = source(images)
    idx = torch.tensor([5, 0, 11, 3, 7, 2])
    whole = src.take(idx, BatchShard.whole(6))
    assert whole.dtype == torch.float32 and torch.equal(whole, images[idx].float() / 255)
    second = src.take(idx, BatchShard(6, 2, 4, 3))  # rank 1 of 3 keeps items 2..3
    assert torch.equal(second, whole[2:4])


def test_take_labels_gives_this_process_the_labels_of_its_images():
    images = (grey_images(12) * 255).round().to(torch.uint8)
    labels = torch.arange(12) * 10 + 3  # label of image i: 10 i + 3
    src = BatchSource(images, 4, seed=7, binarize_mode="dynamic", device=CPU, labels=labels)
    idx = torch.tensor([5, 0, 11, 3, 7, 2])
    for shard in (BatchShard.whole(6), BatchShard(6, 2, 4, 3), BatchShard(6, 6, 6, 3)):  # all; rank 1 of 3; an empty shard
        got = src.take_labels(idx, shard)
        assert got.dtype == torch.long and torch.equal(got, idx[shard.start : shard.stop] * 10 + 3)
        assert len(got) == len(src.take(idx, shard))
    assert source(images).take_labels(idx, BatchShard.whole(6)) is None  # no labels: none needed
    with pytest.raises(ValueError, match=r"labels must be a tensor \[N=12\]"):
        BatchSource(images, 4, seed=7, binarize_mode="none", device=CPU, labels=labels[:5])


# ----------------------------------------------------------------------------- through fit


def spy_encode(model, monkeypatch):
    """A list that receives every x the model encodes."""
    seen = []
    original = model.encode

    def spy(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(x, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    return seen


def recorded_batches(model, images, binarize_mode, monkeypatch, seed=0):
    """Train 2 epochs of one batch each; return the x that the model encoded in each step."""
    seen = spy_encode(model, monkeypatch)
    cfg = TrainConfig(epochs=2, batch_size=len(images), samples=1, device="cpu", binarize=binarize_mode, seed=0)
    torch.manual_seed(seed)
    fit(model, images, cfg, progress=False)
    return seen


def test_fit_trains_on_the_brute_force_order_and_a_resume_goes_on_with_it(monkeypatch):
    images = grey_images(10, seed=4)  # batch 4: batches of 4, 4, 2 per epoch
    cfg = dict(epochs=2, batch_size=4, seed=5, checkpoint_every=4)
    want = [images[idx] for epoch in range(2) for idx in brute_force_batches(10, 4, 5, epoch)]
    states = []
    model = tiny()
    seen = spy_encode(model, monkeypatch)
    fit(model, images, TrainConfig(samples=1, device="cpu", **cfg), progress=False, on_checkpoint=states.append)
    assert len(seen) == len(want) == 6 and all(torch.equal(x, y) for x, y in zip(seen, want))
    state = next(s for s in states if s.step == 4)  # mid-epoch: epoch 1, batch 1
    assert (state.step, state.epoch, state.batch) == (4, 1, 1)
    resumed = tiny()
    seen_after = spy_encode(resumed, monkeypatch)
    fit(resumed, images, TrainConfig(samples=1, device="cpu", **cfg), progress=False, resume=state)
    assert len(seen_after) == 2 and all(torch.equal(x, y) for x, y in zip(seen_after, want[4:]))


def rows(x):
    """The images of a batch as a sorted list of tuples: the batch as a multiset."""
    return sorted(tuple(r) for r in x.reshape(x.shape[0], -1).tolist())


def test_fit_dynamic_binarization_draws_fresh_samples(monkeypatch):
    images = torch.full((8, 1, SIZE, SIZE), 0.5)  # every image the same: the data order does not matter
    seen = recorded_batches(tiny(), images, "dynamic", monkeypatch)
    assert len(seen) == 2
    for x in seen:
        assert x.shape == images.shape
        assert ((x == 0) | (x == 1)).all()
        ones = x.sum().item()
        assert abs(ones - x.numel() / 2) <= 5 * math.sqrt(x.numel() / 4)
    assert not torch.equal(seen[0], seen[1])
    assert rows(seen[0]) != rows(seen[1])
    # the draws come from the global RNG: the same seed gives the same draws, another seed others
    again = recorded_batches(tiny(), images, "dynamic", monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(seen, again))
    other = recorded_batches(tiny(), images, "dynamic", monkeypatch, seed=1)
    assert not torch.equal(seen[0], other[0])


def test_fit_static_binarization_draws_once(monkeypatch):
    images = grey_images(8, seed=13)
    seen = recorded_batches(tiny(), images, "static", monkeypatch)
    assert len(seen) == 2
    for x in seen:
        assert ((x == 0) | (x == 1)).all()
    assert rows(seen[0]) == rows(seen[1])
    assert rows(seen[0]) == rows(binarize(images))
    assert len(set(rows(seen[0]))) == 8  # distinct images, so the multiset comparison means something


def test_fit_without_binarization_sees_the_images(monkeypatch):
    images = grey_images(8, seed=14)
    seen = recorded_batches(tiny(), images, "none", monkeypatch)
    assert len(seen) == 2
    for x in seen:
        assert rows(x) == rows(images)
        assert ((x > 0) & (x < 1)).any()
