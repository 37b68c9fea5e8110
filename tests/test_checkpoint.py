"""Integrity of the files vaekit writes (SHA-256 of tensor bytes) and the one-writer lock on a run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaekit import SimpleVAE
from vaekit.checkpoint import DIGEST_KEY, CheckpointError, RunLock, RunLockedError, load_weights, save_weights
from vaekit.config import ModelConfig, TrainConfig
from vaekit.experiment import load_run, train_run

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"


def test_saved_weights_carry_the_sha256_of_their_tensor_bytes(tmp_path):
    import hashlib

    path = tmp_path / "w.safetensors"
    save_weights(path, SimpleVAE(num_filters=4).state_dict(), {"format": "x"})
    tensors, meta = load_weights(path)
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta[DIGEST_KEY] == hashlib.sha256(data[8 + header :]).hexdigest() and meta["format"] == "x"
    assert set(tensors) == set(SimpleVAE(num_filters=4).state_dict())


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_the_tensor_data_is_refused_naming_the_file(tmp_path, where):
    path = tmp_path / "model.safetensors"
    save_weights(path, SimpleVAE(num_filters=4).state_dict())
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    pos = {"first": start, "middle": (start + len(data)) // 2, "last": len(data) - 1}[where]
    data[pos] ^= 0x01  # a single bit: still a valid float, so only the digest can tell
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path.name} is corrupted: its tensor bytes do not match the SHA-256"):
        load_weights(path)


def test_files_without_a_digest_still_load_with_a_note(capsys):
    """Run folders written before the digest (vaekit 0.1.0, committed as a fixture) load, and say so."""
    tensors, meta = load_weights(FIXTURE_RUN / "model.safetensors")
    assert DIGEST_KEY not in meta and "decoder.0.weight" in tensors
    assert "has no SHA-256 of its tensors" in capsys.readouterr().err


def test_a_second_writer_is_refused_naming_the_folder_and_the_pid(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunLockedError, match=rf"run folder {run} is in use by another vaekit process \(PID {os.getpid()}\)"):
            RunLock(run).acquire()
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            train_run(ModelConfig(num_filters=2), TrainConfig(max_steps=1, batch_size=8), run, overwrite=True, progress=False)
    RunLock(run).acquire().release()  # free again once released


def test_the_lock_dies_with_its_process(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = f"from vaekit.checkpoint import RunLock; import time, sys; RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"PID {proc.pid}"):
            RunLock(run).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        RunLock(run).acquire().release()  # the kernel released it
    finally:
        proc.kill()
        proc.wait()


def test_overwrite_while_another_run_trains_is_refused_and_leaves_its_files(tmp_path, tiny_dataset_dir):
    """A real `vaekit train` holds the lock; `--overwrite` into its folder gets one line and changes nothing."""
    run = tmp_path / "busy"
    cmd = [sys.executable, "-m", "vaekit", "train", "--dataset", str(tiny_dataset_dir), "--num-filters", "2",
           "--batch-size", "8", "--epochs", "50", "--out", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        before = (run / "config.json").read_bytes()
        second = subprocess.run([*cmd[:-1], "--overwrite", "--no-progress"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"in use by another vaekit process (PID {proc.pid})" in second.stderr
        assert (run / "config.json").read_bytes() == before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


def test_legacy_run_folder_loads_with_its_outputs_unchanged():
    """A run folder written by vaekit 0.1.0 (before architectures were recorded) is rebuilt as the assignment's model."""
    model, meta = load_run(FIXTURE_RUN)
    assert "arch" not in meta["model"]
    expected, _ = load_weights(FIXTURE_RUN / "expected.safetensors")
    with torch.no_grad():
        assert torch.equal(model.decode(expected["z"]), expected["decoded"])
        assert torch.equal(model.encoder(expected["x"]), expected["phi"])
