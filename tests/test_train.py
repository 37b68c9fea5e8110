"""Training as a whole (the vaekit.train package): fit and train_vae, their public names, exact resume
(in process, in bf16, and with real SIGKILL/SIGINT) and a resume's change of precision. The collaborators
have their own files: test_train_<module>.py."""

import json
import math
import signal
import time

import numpy as np
import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, binarize, evaluate_elbo, fit, set_seed, train_run, train_vae
from vaekit import config as config_mod
from vaekit.checkpoint import load_weights, save_weights, state_from_tensors, state_to_tensors
from vaekit.config import ModelConfig

from helpers import model_terms, train_args, vaekit, wait_for_checkpoint

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


# ----------------------------------------------------------------------------- bf16: what stays fp32, exact resume, a change of precision
# bf16 autocast is emulated on CPUs without native bf16 (slow), so the models here are tiny.


TINY_BF16 = TrainConfig(epochs=2, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=5, precision="bf16")


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
    snap = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}
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


# ============================================================================ the package's public names


def test_every_public_name_is_importable_from_vaekit_train_and_train_vae_keeps_its_signature():
    import inspect

    import vaekit.train as train

    names = {"fit", "train_vae", "FitResult", "TrainLoop", "TrainingModule", "NonFiniteError", "TrainingInterrupted",
             "set_seed", "configure_threads", "as_image_tensor", "kl_beta", "lr_factor", "lr_warmup_factor", "Monitor", "TensorBoard"}
    assert set(train.__all__) == names
    for name in names:
        assert getattr(train, name).__name__ == name, name
    assert callable(train.fit) and train.fit is fit  # the function, not its module
    # the assignment's API, as it was written
    assert str(inspect.signature(train_vae)) == (
        "(model: 'VAE', dataset: 'Any', epochs: 'int' = 20, n_samples: 'int' = 10, batch_size: 'int' = 256, *, "
        "lr: 'float' = 0.001, device: 'str' = 'auto', seed: 'int | None' = None, calibrated: 'bool' = False, "
        "progress: 'bool' = True) -> 'list[float]'"
    )
