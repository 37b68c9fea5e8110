"""The per-step history (vaekit.train.history): the ELBO and the training objective, their epoch means, kept in
the checkpoint."""

import pytest
import torch

from vaekit.train.history import History

CPU = torch.device("cpu")


def test_epoch_means_are_the_plain_means_of_the_recorded_steps():
    h = History(6, CPU, track_objective=True)
    elbos, objectives = [-100.0, -90.0, -85.5, -80.25, -79.0], [-101.0, -92.0, -86.0, -81.0, -79.5]
    for s in range(5):
        h.record(s, torch.tensor(elbos[s]), torch.tensor(objectives[s]))
    means = h.epoch_means(2, 5)  # the epoch that began at step 2
    assert means == pytest.approx({"train_elbo": sum(elbos[2:]) / 3, "train_objective": sum(objectives[2:]) / 3}, rel=1e-7)
    empty = h.epoch_means(5, 5)
    assert all(v != v for v in empty.values())  # NaN: no step in the epoch
    assert History(3, CPU, track_objective=False).epoch_means(0, 0).keys() == {"train_elbo"}


def test_saved_and_restored_steps_come_back_exactly():
    h = History(8, CPU, track_objective=True)
    for s in range(5):
        h.record(s, torch.tensor(-float(s)), torch.tensor(float(s) * 1.5))
    saved = h.saved(5)
    assert [len(saved["elbos"]), len(saved["objective"])] == [5, 5]

    class State:
        step, elbos, objective = 5, saved["elbos"], saved["objective"]

    again = History(8, CPU, track_objective=True)
    again.restore(State)
    assert again.lists(5) == h.lists(5)
    # a checkpoint written before objectives were recorded apart (objective None) holds the ELBO for both
    State.objective = None
    old = History(8, CPU, track_objective=True)
    old.restore(State)
    assert old.lists(5)["batch_objectives"] == old.lists(5)["batch_elbos"]
