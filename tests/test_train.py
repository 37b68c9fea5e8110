"""Training: fit and train_vae, learning-rate schedules and stopping, binarization while training,
exact resume (with real SIGKILL/SIGINT) and the non-finite guard."""

import json
import math
import signal
import time

import numpy as np
import pytest
import torch

from helpers import SIZE, grey_images, model_terms, tiny, train_args, vaekit, wait_for_checkpoint
from vaekit import SimpleVAE, TrainConfig, binarize, evaluate_elbo, fit, set_seed, train_vae
from vaekit.checkpoint import load_checkpoint, load_weights, save_weights, state_from_tensors, state_to_tensors
from vaekit.config import ModelConfig
from vaekit.experiment import train_run
from vaekit import config as config_mod
from vaekit.distributed import BatchShard
from vaekit.train import NonFiniteError, TrainLoop

TINY = TrainConfig(epochs=4, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=3)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ============================================================================ fit and train_vae


def test_training_raises_the_elbo_on_mnist(mnist):
    x = mnist.train_images[:1024]
    set_seed(0)
    m = SimpleVAE(num_filters=8)
    before = evaluate_elbo(m, x, n_samples=2)["elbo"]
    cfg = TrainConfig(epochs=2, batch_size=64, samples=1, lr=2e-3, calibrated=False, lr_schedule="constant", device="cpu")
    result = fit(m, x, cfg, progress=False)
    after = evaluate_elbo(m, x, n_samples=2)["elbo"]
    assert result.steps == 32
    assert after > before + 50, (before, after)


def test_train_vae_reproducible_and_accepts_datasets(capsys):
    x = torch.rand(96, 1, 28, 28)
    runs = []
    for dataset in (x, torch.utils.data.TensorDataset(x, torch.zeros(96)), [(img, 0) for img in x]):
        set_seed(3)
        m = SimpleVAE(num_filters=4)
        vals = train_vae(m, dataset, epochs=2, n_samples=2, batch_size=32, seed=3, device="cpu", progress=False)
        runs.append((vals, m.state_dict()))
    assert len(runs[0][0]) == 6 and all(isinstance(v, float) for v in runs[0][0])
    for vals, state in runs[1:]:
        assert vals == runs[0][0]
        for k in state:
            assert torch.equal(state[k], runs[0][1][k])
    assert "learned sigma_x" in capsys.readouterr().out


def test_train_vae_rejects_bad_data():
    m = SimpleVAE(num_filters=4)
    with pytest.raises(ValueError, match="batch_size=64"):
        train_vae(m, torch.rand(10, 1, 28, 28), epochs=1, batch_size=64, progress=False, device="cpu")
    with pytest.raises(ValueError, match="floating-point images in \\[0, 1\\] or uint8 pixels in 0..255, got dtype torch.int64"):
        train_vae(m, torch.zeros(10, 1, 28, 28, dtype=torch.int64), epochs=1, batch_size=5, progress=False, device="cpu")


def test_time_budget_stops_training_and_reports_the_partial_epoch():
    x = torch.rand(4096, 1, 28, 28)
    seen = []
    cfg = TrainConfig(epochs=50, batch_size=16, samples=1, time_budget=0.5 / 60, device="cpu")
    result = fit(SimpleVAE(num_filters=4), x, cfg, progress=False, on_epoch_end=lambda e, s: seen.append((e, s)))
    assert result.stopped_by == "time_budget"
    assert 0 < result.steps < 50 * 256
    assert len(seen) == result.epochs_done >= 1
    assert seen[-1][1]["steps"] == result.steps
    assert 0.5 <= seen[-1][1]["seconds"] < 5


def test_max_steps_stops_mid_epoch():
    x = torch.rand(64, 1, 28, 28)
    m = SimpleVAE(num_filters=4)
    cfg = TrainConfig(epochs=10, batch_size=16, samples=1, max_steps=6, lr_schedule="cosine", device="cpu")
    result = fit(m, x, cfg, progress=False)
    assert result.steps == 6 and result.stopped_by == "max_steps" and result.epochs_done == 2


@pytest.mark.parametrize(
    "schedule,frac,expected",
    [
        ("constant", 0.7, 1.0),
        ("cosine", 0.0, 1.0), ("cosine", 0.5, 0.5), ("cosine", 1.0, 0.0),
        ("anneal", 0.0, 1.0), ("anneal", 0.8, 1.0), ("anneal", 0.9, 0.5), ("anneal", 1.0, 0.0), ("anneal", 1.5, 0.0),
    ],
)
def test_lr_schedules(schedule, frac, expected):
    from vaekit.train import lr_factor

    assert lr_factor(schedule, frac) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_warmup_rises_linearly_to_the_schedules_lr(monkeypatch, schedule):
    """The lr Adam steps with (read off the optimizer at each step): L (s + 1) / W for the first W steps, then
    the schedule's L * lr_factor(s / total); warm-up 0 leaves the schedule alone."""
    from vaekit.train import lr_factor

    seen = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **kw: (seen.append(self.param_groups[0]["lr"]), real_step(self, *a, **kw))[1])
    x = grey_images(32, seed=3)
    for warmup in (4, 0):
        seen.clear()
        cfg = TrainConfig(batch_size=4, max_steps=8, epochs=1, lr=2e-3, lr_warmup=warmup, lr_schedule=schedule, device="cpu")
        fit(tiny(), x, cfg, progress=False)
        want = [2e-3 * lr_factor(schedule, s / 8) * (min(1.0, (s + 1) / warmup) if warmup else 1.0) for s in range(8)]
        assert seen == pytest.approx(want, rel=1e-12), warmup


def test_bernoulli_model_trains_with_fit(mnist):
    images = mnist.train_images[:32]
    x = binarize(images)  # what static binarization trains on
    model = SimpleVAE(K=2, num_filters=4, likelihood="bernoulli")
    before = model_terms(model, x, 4, seed=99).loss.mean().item()
    # a fresh model is near 784 log 2 nats per image (logits near 0)
    assert abs(before - 784 * math.log(2)) < 200
    cfg = TrainConfig(epochs=2, batch_size=16, samples=1, lr=1e-2, device="cpu", binarize="static", seed=0)
    result = fit(model, images, cfg, progress=False)
    assert result.steps == 4 and np.isfinite(result.batch_elbos).all()
    after = model_terms(model, x, 4, seed=99).loss.mean().item()
    assert math.isfinite(after) and after < before - 10
    assert model.log_sig_x.item() == 0.0 and not model.log_sig_x.requires_grad


# ============================================================================ fit's binarize modes


def recorded_batches(model, images, binarize_mode, monkeypatch, seed=0):
    """Train 2 epochs of one batch each; return the x that the model encoded in each step."""
    seen = []
    original = model.encode

    def spy(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(x, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    cfg = TrainConfig(epochs=2, batch_size=len(images), samples=1, device="cpu", binarize=binarize_mode, seed=0)
    torch.manual_seed(seed)
    fit(model, images, cfg, progress=False)
    assert len(seen) == 2
    return seen


def rows(x):
    """The images of a batch as a sorted list of tuples: the batch as a multiset."""
    return sorted(tuple(r) for r in x.reshape(x.shape[0], -1).tolist())


def test_fit_dynamic_binarization_draws_fresh_samples(monkeypatch):
    images = torch.full((8, 1, SIZE, SIZE), 0.5)  # every image the same: the data order does not matter
    seen = recorded_batches(tiny(), images, "dynamic", monkeypatch)
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
    for x in seen:
        assert ((x == 0) | (x == 1)).all()
    assert rows(seen[0]) == rows(seen[1])
    assert rows(seen[0]) == rows(binarize(images))
    assert len(set(rows(seen[0]))) == 8  # distinct images, so the multiset comparison means something


def test_fit_without_binarization_sees_the_images(monkeypatch):
    images = grey_images(8, seed=14)
    seen = recorded_batches(tiny(), images, "none", monkeypatch)
    for x in seen:
        assert rows(x) == rows(images)
        assert ((x > 0) & (x < 1)).any()


# ============================================================================ resume


def test_resume_in_process_is_bit_identical(tmp_path):
    x = torch.rand(64, 1, 28, 28)  # 4 steps per epoch
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 3})
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    saved = []
    full = fit(model, x, cfg, progress=False, on_checkpoint=lambda st: saved.append((st, snapshot(model))))
    final = snapshot(model)
    # checkpoints mid-epoch (every 3 steps), at epoch ends, and at the end
    assert [(s.epoch, s.batch) for s, _ in saved][:4] == [(0, 3), (1, 0), (1, 2), (2, 0)]
    assert saved[-1][0].finished and not saved[0][0].finished
    for state, weights in saved[:-1]:
        # through the on-disk form (safetensors + JSON), as a real resume does
        tensors, meta = state_to_tensors(state)
        save_weights(tmp_path / "s.safetensors", tensors)
        loaded, _ = load_weights(tmp_path / "s.safetensors")
        state2 = state_from_tensors(loaded, json.loads(json.dumps(meta)))
        torch.manual_seed(12345)  # the global RNG is restored from the state, whatever it is now
        resumed = SimpleVAE(num_filters=4)
        resumed.load_state_dict(weights)
        out = fit(resumed, x, cfg, progress=False, resume=state2)
        assert_same_weights(snapshot(resumed), final)
        assert out.batch_elbos == full.batch_elbos


def test_sigkill_at_any_point_then_resume_gives_identical_weights(tiny_dataset_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    p = vaekit(*train_args(tiny_dataset_dir, out))
    wait_for_checkpoint(out, p, step_at_least=5)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    # killed again, this time between checkpoints, a few steps into the resumed run
    p = vaekit("train", "--resume", str(out))
    wait_for_checkpoint(out, p, step_at_least=21)
    time.sleep(0.15)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    p = vaekit("train", "--resume", str(out))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    a, _ = load_weights(out / "model.safetensors")
    b, _ = load_weights(uninterrupted / "model.safetensors")
    assert_same_weights(a, b)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["test_elbo"] for r in rows] == [r["test_elbo"] for r in ref]
    # a finished run has nothing left to do
    p = vaekit("train", "--resume", str(out))
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and "already finished" in stdout


def test_sigint_writes_a_checkpoint_and_says_how_to_resume(tiny_dataset_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    p = vaekit(*train_args(tiny_dataset_dir, out))
    wait_for_checkpoint(out, p, step_at_least=3)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130
    assert "SIGINT" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    p = vaekit("train", "--resume", str(out))
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    a, _ = load_weights(out / "model.safetensors")
    b, _ = load_weights(uninterrupted / "model.safetensors")
    assert_same_weights(a, b)


# ============================================================================ the non-finite guard


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


def test_nonfinite_gradient_is_named():
    model = SimpleVAE(num_filters=4)
    model.decoder[0].weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite gradient .* at epoch 1, step 1"):
        fit(model, torch.rand(32, 1, 28, 28), TINY, progress=False)


def test_nonfinite_in_a_run_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, mnist):
    import dataclasses

    x = mnist.train_images[:64].clone()
    x[37, 0, 5, 5] = float("nan")
    tiny = dataclasses.replace(mnist, train_images=x, test_images=mnist.test_images[:32])
    monkeypatch.setattr("vaekit.experiment.load_dataset", lambda name, **kwargs: tiny)
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 1, "eval_samples": 1})
    epoch, step = next(first_bad_step(64, 16, 37, cfg.seed, 1))
    with pytest.raises(NonFiniteError):
        train_run(ModelConfig(num_filters=4), cfg, tmp_path / "run", progress=False)
    _, state, _ = load_checkpoint(tmp_path / "run")
    assert state.step == step - 1
    weights, _ = load_weights(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


# ----------------------------------------------------------------------------- bf16: what stays fp32, exact resume, a change of precision
# bf16 autocast is emulated on CPUs without native bf16 (slow), so the models here are tiny.


TINY_BF16 = TrainConfig(epochs=2, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=5, precision="bf16")


def test_bf16_runs_the_networks_in_bf16_and_keeps_everything_else_fp32():
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    seen = []
    model.decoder.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    model.encoder.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    loop = TrainLoop(model, torch.rand(32, 1, 28, 28), TINY_BF16, progress=False, on_epoch_end=None,
                     on_checkpoint=None, resume=None, log_every=10)
    assert loop.precision == "bf16" and loop.autocast_dtype is torch.bfloat16
    x = torch.rand(16, 1, 28, 28)
    terms, loss = loop.forward_backward(x, BatchShard.whole(16))
    assert seen and set(seen) == {torch.bfloat16}  # the networks ran under autocast
    for name in ("loss", "elbo", "rec", "kl", "log_sig_x"):  # the objective's per-image terms: fp32
        assert getattr(terms, name).dtype == torch.float32, name
    assert loss.dtype == torch.float32
    loop.opt.step()
    for p in model.parameters():  # master weights, gradients and Adam's moments: fp32
        assert p.dtype == torch.float32
        assert p.grad is None or p.grad.dtype == torch.float32
        for key, value in loop.opt.state.get(p, {}).items():
            if key in ("exp_avg", "exp_avg_sq"):
                assert value.dtype == torch.float32, key


def test_fp32_and_auto_here_do_not_autocast(monkeypatch):
    monkeypatch.setattr(config_mod, "_mkldnn_bf16_supported", lambda: False)
    model = SimpleVAE(num_filters=4)
    for precision in ("fp32", "auto"):
        cfg = TrainConfig(batch_size=16, device="cpu", precision=precision)
        loop = TrainLoop(model, torch.rand(32, 1, 28, 28), cfg, progress=False, on_epoch_end=None,
                         on_checkpoint=None, resume=None, log_every=10)
        assert loop.autocast_dtype is None and loop.precision == "fp32"


def test_bf16_training_learns():
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    x = torch.rand(32, 1, 28, 28)
    result = fit(model, x, TrainConfig(epochs=4, batch_size=16, lr=3e-3, device="cpu", precision="bf16"), progress=False)
    assert all(torch.isfinite(torch.tensor(result.batch_elbos)))
    assert result.batch_elbos[-1] > result.batch_elbos[0]


def test_resume_in_bf16_is_bit_identical():
    x = torch.rand(48, 1, 28, 28)  # 3 steps per epoch
    cfg = TrainConfig(**{**TINY_BF16.__dict__, "checkpoint_every": 2})
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    saved = []
    snap = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
    full = fit(model, x, cfg, progress=False, on_checkpoint=lambda st: saved.append((st, snap(model))))
    final = snap(model)
    state, weights = saved[0]  # mid-epoch, after 2 steps
    assert (state.epoch, state.batch) == (0, 2)
    torch.manual_seed(999)
    resumed = SimpleVAE(num_filters=4)
    resumed.load_state_dict(weights)
    out = fit(resumed, x, cfg, progress=False, resume=state)
    for k, v in final.items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert out.batch_elbos == full.batch_elbos


def test_a_run_prints_its_precision_and_a_resume_in_another_precision_says_so(tiny_dataset_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config_mod, "_mkldnn_bf16_supported", lambda: False)  # auto -> fp32, whatever this CPU is
    out = tmp_path / "run"
    cfg = TrainConfig(dataset=str(tiny_dataset_dir), epochs=1, batch_size=32, max_steps=2, eval_samples=1, device="cpu")
    train_run(ModelConfig(num_filters=4), cfg, out, progress=False)
    printed = capsys.readouterr().out
    assert "precision: fp32 (auto: this CPU has no native bf16:" in printed
    meta = json.loads((out / "config.json").read_text())
    assert meta["train"]["precision"] == "auto" and meta["precision"]["used"] == "fp32"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["precision"] == "fp32"
    # the same run on a machine where auto means bf16
    monkeypatch.setattr(config_mod, "BF16_PROVEN_EQUAL", True)
    monkeypatch.setattr(config_mod, "_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(config_mod, "cpu_flags", lambda: {"avx512_bf16"})
    train_run(None, None, out, progress=False, resume=True)
    printed = capsys.readouterr().out
    assert "precision: bf16 (auto: this CPU has native bf16:" in printed
    notes = [line for line in printed.splitlines() if line.startswith("note: the checkpoint was trained in fp32; it goes on in bf16")]
    assert len(notes) == 1


@pytest.mark.parametrize("limit", [{"epochs": 3}, {"epochs": 3, "max_steps": 5}, {"epochs": 3, "max_steps": 4}])
def test_the_last_metrics_row_is_the_full_evaluation(tiny_dataset_dir, tmp_path, limit):
    # 256 training images, batch 64: 4 steps per epoch; max_steps 5 ends mid-epoch 2, max_steps 4 at the end of epoch 1
    out = tmp_path / "run"
    cfg = TrainConfig(dataset=str(tiny_dataset_dir), batch_size=64, eval_samples=3, monitor_samples=1, monitor_images=16,
                      device="cpu", precision="fp32", **limit)
    train_run(ModelConfig(num_filters=4), cfg, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["test_images"], r["test_samples"]) for r in rows[:-1]] == [(16, 1)] * (len(rows) - 1)
    assert (rows[-1]["test_images"], rows[-1]["test_samples"]) == (64, 3)  # all 64 test images, eval_samples
    assert len(rows) == {3: 3, 5: 2, 4: 1}[limit.get("max_steps", 3)]


@pytest.mark.parametrize("env, share, expected", [(None, 1, "cores"), (None, 2, "half"), ("1", 1, 1), ("3", 1, "min3"), ("", 1, "cores"), ("x", 1, "cores")])
def test_configure_threads_gives_a_thread_per_core_at_most_omp_num_threads(monkeypatch, env, share, expected):
    import os

    from vaekit.train import configure_threads

    cores = len(os.sched_getaffinity(0))
    want = {"cores": cores, "half": max(1, cores // 2), "min3": min(cores, 3)}.get(expected, expected)
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    before = torch.get_num_threads()
    try:
        assert configure_threads(share) == want and torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
