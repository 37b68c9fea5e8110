"""The per-epoch monitor (vaekit.train.monitor): its fixed subset of test images, the last row being the full
evaluation, the metrics row it builds, and TensorBoard logging those rows (the objective's own terms too)."""

import json
from types import SimpleNamespace

import pytest
import torch

from vaekit import TrainConfig, evaluate_elbo, train_run
from vaekit.config import ModelConfig
from vaekit.train.monitor import MONITOR_SEED, Monitor, TensorBoard, monitor_subset, objective_name

from helpers import grey_images, tiny


def test_the_monitors_subset_is_a_fixed_random_draw_in_order():
    images = torch.arange(50).reshape(50, 1, 1, 1)
    pick = monitor_subset(images, 10)
    want = torch.randperm(50, generator=torch.Generator().manual_seed(MONITOR_SEED))[:10].sort().values
    assert torch.equal(pick.flatten(), want) and torch.equal(monitor_subset(images, 10), pick)
    assert monitor_subset(images, None) is images and monitor_subset(images, 50) is images


def test_a_row_holds_the_epochs_numbers_and_the_test_elbo_of_that_moment():
    model, test = tiny(), grey_images(8, seed=5)
    cfg = TrainConfig(eval_samples=3, monitor_samples=1, monitor_images=4, beta=2.0, seed=9)
    rows = []
    loop = SimpleNamespace(rt=SimpleNamespace(autocast_dtype=None))
    stats = {"train_elbo": -500.0, "sigma_x": 0.5, "steps": 7, "skipped": 1, "seconds": 3.0, "final": False, "precision": "fp32",
             "train_objective": -510.0, "train_mine": 2.5}
    Monitor(model, cfg, test, rows).on_epoch_end(loop, 1, stats)
    ref = evaluate_elbo(model, monitor_subset(test, 4), n_samples=1, seed=9, sharded=True)
    assert rows == [{
        "epoch": 2, "steps": 7, "train_elbo": -500.0, "test_elbo": ref["elbo"], "test_elbo_se": ref["elbo_se"], "test_rec": ref["rec"],
        "test_kl": ref["kl"], "test_images": 4, "test_samples": 1, "precision": "fp32", "sigma_x": 0.5, "skipped_nonfinite": 1,
        "seconds": 3.0, "train_objective": -510.0, "objective": "elbo with beta=2", "train_mine": 2.5,
    }]
    assert objective_name(TrainConfig(objective="iwae", options={"iw_samples": 5}, kl_warmup=10)) == "iwae(k=5) with beta=1, warm-up 10 steps"


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


def test_tensorboard_logs_each_rows_scalars_and_the_objectives_own_terms(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard needs the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    board = TensorBoard(tmp_path / "tb", tiny(), rows, seed=0)
    for epoch in range(2):
        rows.append({"epoch": epoch + 1, "train_elbo": -9.0 - epoch, "test_elbo": -8.0, "test_rec": -7.0, "test_kl": 1.0,
                     "sigma_x": None, "train_objective": -9.5, "train_mine": 0.25 * epoch})
        board.on_epoch_end(None, epoch, {})
    board.on_end(None)
    board.close()  # closing twice is harmless
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"elbo/train_elbo", "elbo/test_elbo", "terms/test_rec", "terms/test_kl", "terms/train_mine"}
    assert [(e.step, e.value) for e in acc.Scalars("terms/train_mine")] == [(1, 0.0), (2, 0.25)]
    assert [e.step for e in acc.Images("samples")] == [1, 2]
