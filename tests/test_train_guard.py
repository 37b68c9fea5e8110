"""The non-finite guard (vaekit.train.guard): per-step flags, read every step or lazily, a NaN stopping
training before its update, --skip-nonfinite skipping and counting, never a checkpoint from a bad step."""

import dataclasses
import math

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, fit, train_run
from vaekit.checkpoint import load_checkpoint, load_weights
from vaekit.config import ModelConfig
from vaekit.train import NonFiniteError
from vaekit.train.guard import GRADIENT, LOSS, NonFiniteGuard, gradients_bad

TINY = TrainConfig(epochs=4, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=3)
CPU = torch.device("cpu")


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- the guard alone


@pytest.mark.parametrize("loss, grads, expected", [(1.0, 0, 0), (float("nan"), 0, LOSS), (float("inf"), 0, LOSS),
                                                   (1.0, 1, GRADIENT), (1.0, 3, GRADIENT), (float("-inf"), 2, LOSS | GRADIENT)])
def test_a_steps_flag_names_the_loss_and_the_gradient(loss, grads, expected):
    flag = NonFiniteGuard.flag(torch.tensor(loss), torch.tensor(float(grads), dtype=torch.float64))
    assert flag.dtype == torch.int8 and int(flag) == expected


def test_gradients_bad_is_any_parameter_with_a_nan_or_inf_gradient():
    params = [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    params[0].grad, params[1].grad = torch.tensor([1.0, 2.0, 3.0]), torch.ones(2, 2)  # params[2] has no gradient
    assert not gradients_bad(params)
    for value in (float("nan"), float("inf"), float("-inf")):
        params[1].grad[1, 0] = value
        # the reference: a plain loop over every gradient entry
        assert gradients_bad(params) == any(not torch.isfinite(v) for p in params if p.grad is not None for v in p.grad.flatten())
        params[1].grad[1, 0] = 1.0


def test_checked_every_step_a_bad_step_raises_before_the_next_record():
    guard = NonFiniteGuard(10, CPU, check_every=1)
    for step in range(3):
        guard.record(step, torch.tensor(0, dtype=torch.int8), epoch=0)
    assert guard.checked == 3
    with pytest.raises(NonFiniteError, match=r"non-finite gradient \(NaN or Inf\) at epoch 2, step 4;.*--skip-nonfinite"):
        guard.record(3, torch.tensor(GRADIENT, dtype=torch.int8), epoch=1)


def test_checked_lazily_the_window_is_read_when_it_completes_or_a_state_is_taken():
    """Every 4 steps (an accelerator's log_every): flags of steps 0..2 are not read until step 3 is recorded,
    which raises naming the first bad step, still before step 3's update; a state taken mid-window reads it."""
    guard = NonFiniteGuard(12, CPU, check_every=4)
    ok, bad = torch.tensor(0, dtype=torch.int8), torch.tensor(LOSS, dtype=torch.int8)
    guard.record(0, ok, epoch=0)
    guard.record(1, bad, epoch=0)
    guard.record(2, ok, epoch=0)  # no error yet: nothing read
    assert guard.checked == 0
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at epoch 1, step 2;"):
        guard.record(3, ok, epoch=0)
    lazy = NonFiniteGuard(12, CPU, check_every=4)
    lazy.record(0, ok, epoch=0)
    lazy.record(1, bad, epoch=0)
    with pytest.raises(NonFiniteError, match=r"step 2;"):
        lazy.check(2, epoch=0)  # what TrainLoop.state does before any checkpoint


def test_skip_reads_every_step_and_a_resumed_guard_starts_after_the_saved_steps():
    guard = NonFiniteGuard(10, CPU, check_every=10, skip=True)
    assert guard.check_every == 1
    assert guard.skips(torch.tensor(LOSS, dtype=torch.int8)) and not guard.skips(torch.tensor(0, dtype=torch.int8))
    assert not NonFiniteGuard(10, CPU).skips(torch.tensor(LOSS, dtype=torch.int8))  # without skip: never skipped
    resumed = NonFiniteGuard(10, CPU, checked=6)
    resumed.check(6, epoch=1)  # the saved steps are not read again (their flags are not kept)
    assert resumed.checked == 6


# ----------------------------------------------------------------------------- in training


def nan_images(n=64, bad_index=37):
    x = torch.rand(n, 1, 28, 28)
    x[bad_index, 0, 5, 5] = float("nan")
    return x, bad_index


def first_bad_step(n, bs, bad_index, seed, epochs):
    """Where the NaN image lands, from the documented data order: randperm(seed * 100003 + epoch)."""
    steps = -(-n // bs)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        pos = (perm == bad_index).nonzero().item()
        yield epoch, epoch * steps + pos // bs + 1


def test_nonfinite_loss_stops_with_epoch_step_and_quantity_and_keeps_the_last_good_checkpoint():
    x, bad = nan_images()
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 1})
    epoch, step = next(first_bad_step(64, 16, bad, cfg.seed, 1))
    model = SimpleVAE(num_filters=4)
    saved = []
    with pytest.raises(NonFiniteError, match=rf"non-finite loss .* at epoch {epoch + 1}, step {step}"):
        fit(model, x, cfg, progress=False, on_checkpoint=lambda st: saved.append((st.step, snapshot(model))))
    assert [s for s, _ in saved] == list(range(1, step))  # never a checkpoint from the bad step on
    for k, v in model.state_dict().items():  # the update from the bad batch was not applied
        assert torch.isfinite(v).all(), k
    if saved:  # stronger: the weights are exactly those after the last good step
        for k, v in saved[-1][1].items():
            assert torch.equal(model.state_dict()[k], v), k


def test_skip_nonfinite_skips_and_counts():
    x, bad = nan_images()
    cfg = TrainConfig(**{**TINY.__dict__, "skip_nonfinite": True})
    model = SimpleVAE(num_filters=4)
    stats = []
    result = fit(model, x, cfg, progress=False, on_epoch_end=lambda e, s: stats.append(s))
    assert result.skipped == cfg.epochs  # the NaN image is in one batch per epoch
    assert result.steps == cfg.epochs * 4 - cfg.epochs
    assert [s["skipped"] for s in stats] == [1, 2, 3, 4]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert len(result.batch_elbos) == result.steps and not any(math.isnan(v) for v in result.batch_elbos)  # no NaN recorded


def test_a_skipped_batch_changes_no_weight():
    """The step on the NaN batch is skipped: the weights after it are those before it (checkpoints each batch)."""
    x, bad = nan_images()
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 1, "skip_nonfinite": True, "checkpoint_every": 1})
    _, step = next(first_bad_step(64, 16, bad, cfg.seed, 1))
    model = SimpleVAE(num_filters=4)
    saved = []
    fit(model, x, cfg, progress=False, on_checkpoint=lambda st: saved.append((st.step, st.skipped, st.batch, snapshot(model))))
    # after the bad batch (batch `step` of the epoch) the step count stays, the skip count rises, the weights stay
    before = next(s for s in saved if s[2] == step - 1)
    after = next(s for s in saved if s[2] == step)
    assert (after[0], after[1]) == (before[0], before[1] + 1)
    assert all(torch.equal(after[3][k], before[3][k]) for k in before[3])


def test_nonfinite_gradient_is_named():
    model = SimpleVAE(num_filters=4)
    model.decoder[0].weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite gradient .* at epoch 1, step 1"):
        fit(model, torch.rand(32, 1, 28, 28), TINY, progress=False)


def test_nonfinite_in_a_run_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, mnist):
    x = mnist.train_images[:64].clone()
    x[37, 0, 5, 5] = float("nan")
    tiny = dataclasses.replace(mnist, train_images=x, test_images=mnist.test_images[:32])
    monkeypatch.setattr("vaekit.commands.train.load_dataset", lambda name, **kwargs: tiny)
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 1, "eval_samples": 1})
    epoch, step = next(first_bad_step(64, 16, 37, cfg.seed, 1))
    with pytest.raises(NonFiniteError):
        train_run(ModelConfig(num_filters=4), cfg, tmp_path / "run", progress=False)
    _, state, _ = load_checkpoint(tmp_path / "run")
    assert state.step == step - 1
    weights, _ = load_weights(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
