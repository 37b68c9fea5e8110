"""The per-step history (vaekit.train.history): the ELBO, the training objective and an objective's own terms
(Terms.extra), their epoch means in fit's stats and the metrics rows (train_<name>), kept in the checkpoint so
that a resumed run writes the rows of an uninterrupted one."""

import json
import math
import os
import signal

import pytest
import torch

from vaekit import TrainConfig, fit, train_run
from vaekit.checkpoint import load_checkpoint, load_weights
from vaekit.config import ModelConfig
from vaekit.objectives import OBJECTIVES, Terms
from vaekit.objectives.elbo import ELBO
from vaekit.train import TrainingInterrupted
from vaekit.train.history import History

from helpers import grey_images, tiny

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the history alone


def test_epoch_means_are_the_plain_means_of_the_recorded_steps():
    h = History(6, CPU, track_objective=True)
    elbos, objectives, kls = [-100.0, -90.0, -85.5, -80.25, -79.0], [-101.0, -92.0, -86.0, -81.0, -79.5], [3.0, 4.0, 5.5, 6.0, 6.5]
    for s in range(5):
        h.record(s, torch.tensor(elbos[s]), torch.tensor(objectives[s]), {"kl_term": torch.tensor(kls[s])})
    means = h.epoch_means(2, 5)  # the epoch that began at step 2
    assert means == pytest.approx({"train_elbo": sum(elbos[2:]) / 3, "train_objective": sum(objectives[2:]) / 3,
                                   "train_kl_term": sum(kls[2:]) / 3}, rel=1e-7)
    empty = h.epoch_means(5, 5)
    assert all(math.isnan(v) for v in empty.values())  # NaN: no step in the epoch
    assert History(3, CPU, track_objective=False).epoch_means(0, 0).keys() == {"train_elbo"}


def test_a_term_that_appears_late_is_nan_before_and_names_are_checked():
    h = History(4, CPU, track_objective=False)
    h.record(0, torch.tensor(-5.0), torch.tensor(5.0), {})
    h.record(1, torch.tensor(-4.0), torch.tensor(4.0), {"late": torch.tensor(2.0)})
    values = h.lists(2)["batch_extras"]["late"]
    assert math.isnan(values[0]) and values[1] == 2.0
    for bad in ("elbo", "objective", "not a name", ""):
        with pytest.raises(ValueError, match=rf"the objective's extra term {bad!r} needs a name that is a Python identifier"):
            h.record(2, torch.tensor(-3.0), torch.tensor(3.0), {bad: torch.tensor(1.0)})


def test_saved_and_restored_steps_come_back_exactly():
    h = History(8, CPU, track_objective=True)
    for s in range(5):
        h.record(s, torch.tensor(-float(s)), torch.tensor(float(s) * 1.5), {"t": torch.tensor(float(s) / 3)})
    saved = h.saved(5)
    assert [len(saved["elbos"]), len(saved["objective"]), len(saved["extras"]["t"])] == [5, 5, 5]

    class State:
        step, elbos, objective, extras = 5, saved["elbos"], saved["objective"], saved["extras"]

    again = History(8, CPU, track_objective=True)
    again.restore(State)
    assert again.lists(5) == h.lists(5)
    # a checkpoint written before objectives were recorded apart (objective None) holds the ELBO for both
    State.objective, State.extras = None, {}
    old = History(8, CPU, track_objective=True)
    old.restore(State)
    assert old.lists(5)["batch_objectives"] == old.lists(5)["batch_elbos"] and old.extras == {}


# ----------------------------------------------------------------------------- an objective with a term of its own


class HalfELBO(ELBO):
    """toy-extra: the ELBO, with two terms of its own (half the ELBO, and a constant 1)"""

    name = "toy-extra"
    calls = 0
    interrupt_at: int | None = None  # send SIGINT to this process during this call

    def __call__(self, model, x, **kwargs) -> Terms:
        HalfELBO.calls += 1
        if HalfELBO.calls == HalfELBO.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        terms = super().__call__(model, x, **kwargs)
        return terms._replace(extra={"half_elbo": terms.elbo / 2, "one": torch.ones_like(terms.elbo)})


@pytest.fixture
def toy_objective(monkeypatch):
    OBJECTIVES.discover()  # the built-in objectives first: they register into the registry's own dict
    monkeypatch.setattr(OBJECTIVES, "_parts", dict(OBJECTIVES._parts))
    OBJECTIVES.register(HalfELBO)
    HalfELBO.calls, HalfELBO.interrupt_at = 0, None
    return HalfELBO.name


def test_fit_reports_the_terms_per_step_and_their_epoch_means(toy_objective):
    """half_elbo is exactly half the ELBO (halving is exact in floating point), step by step and in every mean."""
    stats = []
    cfg = TrainConfig(epochs=2, batch_size=8, objective=toy_objective, device="cpu")
    result = fit(tiny(), grey_images(24), cfg, progress=False, on_epoch_end=lambda e, s: stats.append(s))
    assert result.batch_extras["half_elbo"] == [e / 2 for e in result.batch_elbos] and len(result.batch_elbos) == 6
    assert result.batch_extras["one"] == [1.0] * 6
    for s in stats:
        assert s["train_half_elbo"] == s["train_elbo"] / 2 and s["train_one"] == 1.0
    assert "train_objective" not in stats[0]  # it trains the ELBO: no objective apart


def run_cfg(dataset, objective, **kw):
    return TrainConfig(dataset=str(dataset), epochs=3, batch_size=64, eval_samples=1, device="cpu", precision="fp32",
                       objective=objective, lr_schedule="constant", **kw)


def rows_of(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_terms_reach_the_metrics_rows_the_checkpoint_and_the_report_and_survive_a_resume(toy_objective, tiny_dataset_dir, tmp_path):
    """An uninterrupted run, and one interrupted by SIGINT in the middle of its second epoch (256 images, batch 64:
    4 steps per epoch) and resumed: the same weights and rows, train_half_elbo included (its partial epoch's mean
    needs the saved per-step values)."""
    full = tmp_path / "full"
    train_run(ModelConfig(num_filters=4), run_cfg(tiny_dataset_dir, toy_objective), full, progress=False)
    rows = rows_of(full)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["train_half_elbo"] == r["train_elbo"] / 2 and r["train_one"] == 1.0
    assert "train_half_elbo" in (full / "report.html").read_text()
    _, state, _ = load_checkpoint(full)
    assert set(state.extras) == {"half_elbo", "one"} and torch.equal(state.extras["half_elbo"], state.elbos / 2)

    cut = tmp_path / "cut"
    HalfELBO.calls, HalfELBO.interrupt_at = 0, 6  # the flag is read during that step: stopped after step 6
    with pytest.raises(TrainingInterrupted):
        train_run(ModelConfig(num_filters=4), run_cfg(tiny_dataset_dir, toy_objective), cut, progress=False)
    _, state, _ = load_checkpoint(cut)
    assert (state.step, state.epoch, state.batch) == (6, 1, 2) and len(state.extras["half_elbo"]) == 6
    HalfELBO.interrupt_at = None
    train_run(None, None, cut, progress=False, resume=True)
    assert rows_of(cut) == rows
    a, b = load_weights(full / "model.safetensors")[0], load_weights(cut / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
