"""When training stops (vaekit.train.stop): the training clock (injected, never the wall clock), the step
limit, the time budget, SIGINT/SIGTERM, and what all processes agree on."""

import os
import signal

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, fit
from vaekit.train import TrainingInterrupted, TrainLoop
from vaekit.train.callbacks import Callback, EpochEndFunction
from vaekit.train.stop import Clock, StopPolicy, StopSignals

from helpers import grey_images, tiny

CPU = torch.device("cpu")


class FakeTime:
    """A clock that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Tick(Callback):
    """Each batch takes ``seconds`` of (fake) time."""

    def __init__(self, time, seconds=1.0):
        self.time, self.seconds = time, seconds

    def on_step_end(self, loop):
        self.time.now += self.seconds


# ----------------------------------------------------------------------------- the clock


def test_the_clock_counts_from_its_start_without_the_paused_time():
    t = FakeTime()
    clock = Clock(t)
    clock.start(5.0)  # a resumed run had trained 5 s
    t.now += 2.0
    assert clock.seconds() == 7.0
    with clock.paused():
        t.now += 10.0
        assert clock.seconds() == 7.0  # frozen while paused
        with clock.paused():  # a pause inside a pause counts once
            t.now += 3.0
        assert clock.seconds() == 7.0
    t.now += 1.0
    assert clock.seconds() == 8.0


# ----------------------------------------------------------------------------- the policy alone


def policy(time=None, **cfg):
    cfg = TrainConfig(**{"epochs": 3, "device": "cpu", **cfg})
    t = time or FakeTime()
    clock = Clock(t)
    return StopPolicy(cfg, steps_per_epoch=5, clock=clock), t, clock


@pytest.mark.parametrize("max_steps, total", [(None, 15), (7, 7), (15, 15), (100, 15)])
def test_the_step_limit_is_the_epochs_steps_at_most_max_steps(max_steps, total):
    stop, _, _ = policy(max_steps=max_steps)
    assert stop.total == total
    assert [stop.limit_reached(s) for s in range(total)] == [False] * total and stop.stopped_by == "epochs"
    assert stop.limit_reached(total) and stop.stopped_by == "max_steps"


def test_the_time_budget_stops_once_the_agreed_clock_reaches_it():
    stop, _, _ = policy(time_budget=0.5)  # 30 s
    for secs, stops in ((0.0, False), (29.9, False), (30.0, True)):
        stop.read(torch.tensor([0.0, 0.0, secs], dtype=torch.float64))
        assert stop.limit_reached(3) == stops and stop.elapsed == secs
    assert stop.stopped_by == "time_budget"


def test_the_runs_fraction_is_the_further_of_steps_and_clock():
    stop, _, _ = policy(time_budget=1.0)  # 60 s, 15 steps
    stop.read(torch.tensor([0.0, 0.0, 12.0], dtype=torch.float64))
    assert stop.fraction(6) == pytest.approx(6 / 15)
    stop.read(torch.tensor([0.0, 0.0, 45.0], dtype=torch.float64))
    assert stop.fraction(6) == pytest.approx(45 / 60)
    assert policy()[0].fraction(3) == pytest.approx(3 / 15)  # no budget: by steps


def test_the_final_epoch_is_the_last_by_epochs_steps_or_budget():
    stop, _, _ = policy(max_steps=12)
    assert [stop.is_final(e, s) for e, s in ((0, 5), (1, 10), (2, 12))] == [False, False, True]
    stop, _, _ = policy()
    assert not stop.is_final(1, 10) and stop.is_final(2, 15)
    stop, _, _ = policy(time_budget=0.5)
    stop.read(torch.tensor([0.0, 0.0, 31.0], dtype=torch.float64))
    assert stop.is_final(0, 2)


def test_processes_agree_on_the_mean_clock_and_on_any_signal():
    """``read`` takes the sum over processes of each one's ``local()`` [SIGINT, SIGTERM, seconds]."""
    cfg = TrainConfig(epochs=1, device="cpu")
    t = FakeTime()
    clock = Clock(t)
    clock.start(0.0)
    t.now += 4.0
    stop = StopPolicy(cfg, 5, clock, world=2)
    assert stop.local(CPU).tolist() == [0.0, 0.0, 4.0]
    other = torch.tensor([1.0, 0.0, 6.0], dtype=torch.float64)  # the other process saw SIGINT, its clock says 6 s
    stop.read(stop.local(CPU) + other)
    assert stop.elapsed == 5.0 and stop.signal == signal.SIGINT
    stop.read(torch.tensor([1.0, 1.0, 10.0], dtype=torch.float64))
    assert stop.signal == signal.SIGTERM  # SIGTERM wins: it is the one that says "go away"
    with pytest.raises(TrainingInterrupted, match="SIGTERM received at step 3") as e:
        stop.raise_if_signalled("at step 3")
    assert e.value.signum == signal.SIGTERM
    stop.read(torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64))
    stop.raise_if_signalled("never")  # no signal: nothing


def test_signals_become_a_flag_inside_and_the_handlers_come_back_after():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGTERM
        signals.received = None
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second SIGINT aborts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ----------------------------------------------------------------------------- in training


def test_time_budget_stops_training_and_reports_the_partial_epoch():
    """Each batch takes 1 s of a fake clock; the budget is 30 s. The clock is agreed during each step, and a step
    starts while the last agreed time is under the budget: steps 1..31 run (the 31st saw 30 s), none after."""
    t = FakeTime()
    seen = []
    cfg = TrainConfig(epochs=50, batch_size=16, samples=1, time_budget=0.5, device="cpu")  # 8 steps per epoch
    loop = TrainLoop(SimpleVAE(num_filters=4), torch.rand(128, 1, 28, 28), cfg, clock=Clock(t),
                     callbacks=[Tick(t), EpochEndFunction(lambda e, s: seen.append((e, s)))])
    result = loop.run()
    assert result.stopped_by == "time_budget"
    assert result.steps == 31 and 0 < result.steps < 50 * 8
    assert len(seen) == result.epochs_done == 4  # 3 whole epochs and the partial 4th
    assert seen[-1][1]["steps"] == result.steps
    assert [s["final"] for _, s in seen] == [False, False, False, True]
    assert seen[-1][1]["seconds"] == 31.0 and result.seconds == 31.0


def test_time_in_callbacks_is_not_training_time():
    """An epoch-end callback that takes 1000 s of the fake clock does not count towards seconds or the budget."""
    t = FakeTime()

    class SlowEpochEnd(Callback):
        def on_epoch_end(self, loop, epoch, stats):
            t.now += 1000.0

    seen = []
    cfg = TrainConfig(epochs=3, batch_size=16, samples=1, time_budget=1.0, device="cpu")  # 60 s; 2 steps per epoch
    loop = TrainLoop(tiny(), grey_images(32), cfg, clock=Clock(t),
                     callbacks=[Tick(t, 2.0), SlowEpochEnd(), EpochEndFunction(lambda e, s: seen.append(s["seconds"]))])
    result = loop.run()
    assert result.stopped_by == "epochs" and result.steps == 6
    assert seen == [4.0, 8.0, 12.0] and result.seconds == 12.0


def test_max_steps_stops_mid_epoch():
    x = torch.rand(64, 1, 28, 28)
    m = SimpleVAE(num_filters=4)
    cfg = TrainConfig(epochs=10, batch_size=16, samples=1, max_steps=6, lr_schedule="cosine", device="cpu")
    result = fit(m, x, cfg, progress=False)
    assert result.steps == 6 and result.stopped_by == "max_steps" and result.epochs_done == 2


def test_a_signal_writes_a_checkpoint_and_stops_with_training_interrupted():
    """SIGINT sent after step 3: the flag is agreed on during step 4, after which one (not finished) checkpoint
    of step 4 is written and fit raises; the process's own handler is back afterwards."""

    class Interrupt(Callback):
        def on_step_end(self, loop):
            if loop.pos.step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    saved = []
    before = signal.getsignal(signal.SIGINT)
    cfg = TrainConfig(epochs=3, batch_size=4, samples=1, checkpoint_every=2, device="cpu")  # 8 steps per epoch
    with pytest.raises(TrainingInterrupted, match=r"SIGINT received at epoch 1, step 4") as e:
        fit(tiny(), grey_images(32), cfg, progress=False, callbacks=[Interrupt()],
            on_checkpoint=lambda st: saved.append((st.step, st.epoch, st.batch, st.finished)))
    assert e.value.signum == signal.SIGINT
    assert saved == [(2, 0, 2, False), (4, 0, 4, False)]  # every 2 steps; step 4's is the signal's, written once
    assert signal.getsignal(signal.SIGINT) == before


def test_a_signal_during_the_last_epoch_end_still_stops_after_the_last_checkpoint():
    """SIGTERM arriving during the last evaluation: the run's last (finished) checkpoint is written, then fit raises."""

    class LateSignal(Callback):
        def on_epoch_end(self, loop, epoch, stats):
            if stats["final"]:
                os.kill(os.getpid(), signal.SIGTERM)

    saved = []
    cfg = TrainConfig(epochs=2, batch_size=8, samples=1, device="cpu")
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM received after the last step \(8\)"):
        fit(tiny(), grey_images(32), cfg, progress=False, callbacks=[LateSignal()], on_checkpoint=lambda st: saved.append(st.finished))
    assert saved == [False, False, True]
