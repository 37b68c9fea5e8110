"""The trainer in bf16: what stays fp32, exact resume, and a change of precision on resume.

bf16 autocast is emulated on CPUs without native bf16 (slow), so the models here are tiny.
"""

from __future__ import annotations

import json

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, fit, set_seed
from vaekit import config as config_mod
from vaekit.distributed import BatchShard
from vaekit.experiment import train_run
from vaekit.config import ModelConfig
from vaekit.train import TrainLoop

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
