"""Nothing lost: checkpoints, exact resume (with real SIGKILL/SIGINT), the non-finite guard, disk errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, fit, set_seed
from vaekit.checkpoint import load_weights, save_weights
from vaekit.checkpoint import CHECKPOINT, load_checkpoint, state_from_tensors, state_to_tensors
from vaekit.experiment import train_run
from vaekit.config import ModelConfig
from vaekit.train import NonFiniteError

TINY = TrainConfig(epochs=4, batch_size=16, samples=2, lr=1e-3, device="cpu", seed=3)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


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


def vaekit(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def train_args(dataset, out, extra=()):
    return ["train", "--dataset", str(dataset), "--out", str(out), "--epochs", "3", "--batch-size", "16",
            "--samples", "2", "--num-filters", "4", "--eval-samples", "1", "--checkpoint-every", "2",
            "--device", "cpu", "--seed", "5", "--no-progress", *extra]


def wait_for_checkpoint(path, proc, step_at_least, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                _, state, _ = load_checkpoint(path.parent)
                if state.step >= step_at_least:
                    return state.step
            except Exception:  # noqa: BLE001 - being replaced right now; atomic, so retry
                pass
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    p = vaekit(*train_args(tiny_dataset_dir, out))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    return out


def test_sigkill_at_any_point_then_resume_gives_identical_weights(tiny_dataset_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    p = vaekit(*train_args(tiny_dataset_dir, out))
    wait_for_checkpoint(out / CHECKPOINT, p, step_at_least=5)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    # killed again, this time between checkpoints, a few steps into the resumed run
    p = vaekit("train", "--resume", str(out))
    wait_for_checkpoint(out / CHECKPOINT, p, step_at_least=21)
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
    wait_for_checkpoint(out / CHECKPOINT, p, step_at_least=3)
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


def test_resume_refuses_other_flags_and_missing_checkpoints(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


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
    monkeypatch.setattr("vaekit.experiment.load_dataset", lambda name: tiny)
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 1, "eval_samples": 1})
    epoch, step = next(first_bad_step(64, 16, 37, cfg.seed, 1))
    with pytest.raises(NonFiniteError):
        train_run(ModelConfig(num_filters=4), cfg, tmp_path / "run", progress=False)
    _, state, _ = load_checkpoint(tmp_path / "run")
    assert state.step == step - 1
    weights, _ = load_weights(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def mount_tmpfs(path, options):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=48k")
    yield disk
    subprocess.run(["umount", str(disk)])


def test_full_disk_is_a_clear_error_and_keeps_the_previous_file(small_disk):
    from vaekit.checkpoint import atomic_write_bytes

    target = small_disk / "model.safetensors"
    atomic_write_bytes(target, b"old contents")
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"x" * 200_000)
    assert target.read_bytes() == b"old contents"
    assert os.listdir(small_disk) == ["model.safetensors"]  # no temporary file left behind


def test_read_only_output_folder_is_refused_up_front(tmp_path, capsys):
    from vaekit.cli import main

    ro = tmp_path / "ro"
    mount_tmpfs(ro, "ro,size=64k")
    try:
        code = main(["train", "--max-steps", "1", "--out", str(ro / "run"), "--no-progress"])
        err = capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)])
    assert code == 2
    assert str(ro / "run") in err and "Read-only" in err and "Traceback" not in err


def test_written_files_are_readable_by_others(tmp_path):
    from vaekit.checkpoint import atomic_write_bytes

    atomic_write_bytes(tmp_path / "f", b"x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_batch_larger_than_the_data_is_refused_before_writing(tiny_dataset_dir, tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--batch-size", "1000", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "batch_size=1000" in err and "256 training images" in err
    assert not out.exists()


def test_resume_of_a_finished_run_redraws_missing_figures_and_takes_device(uninterrupted, capsys):
    from vaekit.cli import main

    (uninterrupted / "samples.png").unlink()
    assert main(["train", "--resume", str(uninterrupted), "--device", "cpu", "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (uninterrupted / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_overwrite_removes_an_older_runs_checkpoint_before_training(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"an older run's checkpoint")

    def killed(*args, **kwargs):  # the new run dies before its first checkpoint
        raise OSError("killed before the first checkpoint")

    monkeypatch.setattr("vaekit.experiment.fit", killed)
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert not (out / CHECKPOINT).exists()
    assert main(["train", "--resume", str(out)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_inconsistent_checkpoint_is_one_clear_error(uninterrupted, tmp_path):
    import shutil

    from vaekit.checkpoint import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    tensors, header = load_weights(run / CHECKPOINT)
    tensors["elbos"] = tensors["elbos"][:3]
    save_weights(run / CHECKPOINT, tensors, header)
    with pytest.raises(CheckpointError, match="inconsistent position"):
        load_checkpoint(run)
