"""This process's set-up (vaekit.train.runtime): precision (bf16 autocast for the networks only), threads,
the model made ready (device, channels_last, train mode) with its objective, one process as a run of one."""

import os

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, set_seed
from vaekit import config as config_mod
from vaekit.distributed import BatchShard
from vaekit.train import TrainingModule, TrainLoop, configure_threads
from vaekit.train.runtime import Runtime

TINY_BF16 = TrainConfig(epochs=2, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=5, precision="bf16")


def test_one_process_is_a_run_of_one_and_the_model_is_made_ready():
    rt = Runtime.start(TrainConfig(device="cpu", precision="fp32", objective="iwae", options={"iw_samples": 3}))
    assert (rt.device, rt.world, rt.is_main, rt.precision) == (torch.device("cpu"), 1, True, "fp32")
    assert rt.shard(10) == BatchShard.whole(10)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(rt.all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    model = SimpleVAE(num_filters=4).eval()
    step_fn, objective = rt.prepare(model, TrainConfig(objective="iwae", options={"iw_samples": 3}))
    assert isinstance(step_fn, TrainingModule) and step_fn.model is model and step_fn.objective is objective
    assert objective.name == "iwae" and objective.samples == 3
    assert model.training and model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_runs_the_networks_in_bf16_and_keeps_everything_else_fp32():
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    seen = []
    model.decoder.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    model.encoder.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    loop = TrainLoop(model, torch.rand(32, 1, 28, 28), TINY_BF16)
    assert loop.rt.precision == "bf16" and loop.rt.autocast_dtype is torch.bfloat16
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
        loop = TrainLoop(model, torch.rand(32, 1, 28, 28), cfg)
        assert loop.rt.autocast_dtype is None and loop.rt.precision == "fp32"


@pytest.mark.parametrize("env, share, expected", [(None, 1, "cores"), (None, 2, "half"), ("1", 1, 1), ("3", 1, "min3"), ("", 1, "cores"), ("x", 1, "cores")])
def test_configure_threads_gives_a_thread_per_core_at_most_omp_num_threads(monkeypatch, env, share, expected):
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


def test_set_seed_repeats_every_generator():
    import random

    import numpy as np

    draws = []
    for _ in range(2):
        set_seed(11)
        draws.append((random.random(), float(np.random.rand()), torch.rand(3).tolist()))
    assert draws[0] == draws[1]
