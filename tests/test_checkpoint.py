"""The files vaekit writes: safetensors round trips, integrity (SHA-256 of tensor bytes), the one-writer lock on a
run folder, atomic writes on a full disk, consistent checkpoints, and never unpickling."""

from __future__ import annotations

import ast
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit import SimpleVAE, load_run, train_run
from vaekit.checkpoint import (
    CHECKPOINT,
    DIGEST_KEY,
    LOCK_FILE,
    CheckpointError,
    RunLock,
    RunLockedError,
    atomic_write_bytes,
    load_checkpoint,
    load_weights,
    remove_stale_temp_files,
    save_weights,
)
from vaekit.config import ModelConfig, TrainConfig

from helpers import mount_tmpfs, pickle_payload, torch_save_payload

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"
SRC = Path(vaekit.__file__).parent


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
    assert list(run.iterdir()) == []  # and its file is gone


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
        assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # a dead holder's file is left behind ...
        lock = RunLock(run).acquire()  # ... and taken over: the kernel released the lock
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock.release()
        assert not (run / LOCK_FILE).exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_file_removed_as_it_is_opened_is_not_taken(tmp_path, monkeypatch):
    """B opens the lock file just before its holder A releases (and removes) it: B then locks a removed file. B must
    see that and lock the path's new file, so that C, coming next, is refused: never two writers."""
    run = tmp_path / "run"
    run.mkdir()
    a = RunLock(run).acquire()
    real_open = os.open
    opened = []

    def open_then_a_releases(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if Path(path) == run / LOCK_FILE and not opened:
            opened.append(os.fstat(fd).st_ino)
            a.release()  # A ends between B's open and B's flock
        return fd

    monkeypatch.setattr(os, "open", open_then_a_releases)
    b = RunLock(run).acquire()
    monkeypatch.setattr(os, "open", real_open)
    assert opened, "the race was not staged"
    assert os.stat(run / LOCK_FILE).st_ino == os.fstat(b._fd).st_ino  # B holds the file the path names
    with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
        RunLock(run).acquire()  # C
    b.release()
    assert not (run / LOCK_FILE).exists()


def test_stale_temp_files_are_atomic_writes_of_the_given_names_only(tmp_path):
    """The names atomic_write gives its temporary files (made by the same mkstemp call) are removed for the
    given file names; a user's files and near misses are not."""
    import tempfile

    stale = [Path(tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)[1])
             for name in ("checkpoint.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.json")]
    keep = [".checkpoint.safetensors.tmp", ".checkpoint.safetensors.abc1234.tmp", ".checkpoint.safetensors.abcd12345.tmp",
            ".checkpoint.safetensors.ABCD1234.tmp", "checkpoint.safetensors.abcd1234.tmp", ".checkpoint.safetensors.abcd1234.tmp~",
            ".checkpoint.safetensors.abcd-234.tmp", ".photo.png.abcd1234.tmp", ".config.jsonx.abcd1234.tmp", "config.json", "notes.tmp"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".model.safetensors.abcd1234.tmp").mkdir()  # not a file
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    (tmp_path / ".report.html.abcd1234.tmp").symlink_to(target)  # not atomic_write's: it makes plain files
    names = {"checkpoint.safetensors", "metrics.jsonl", "config.json", "model.safetensors", "report.html"}
    assert remove_stale_temp_files(tmp_path, names) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all((tmp_path / name).read_text() == "keep" for name in keep) and target.read_text() == "keep"
    assert (tmp_path / ".model.safetensors.abcd1234.tmp").is_dir() and (tmp_path / ".report.html.abcd1234.tmp").is_symlink()
    atomic_write_bytes(tmp_path / "config.json", b"{}")  # the pattern is atomic_write's own: a finished write leaves none
    assert remove_stale_temp_files(tmp_path, names) == []


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
    """A run folder written by vaekit 0.1.0 (before architectures were recorded) is rebuilt as the assignment's
    model: the same weights bit for bit, and the same outputs to float32 rounding (bit for bit on the CPU that
    wrote the fixture; another CPU's convolution kernels round differently)."""
    model, meta = load_run(FIXTURE_RUN)
    assert "arch" not in meta["model"]
    expected, _ = load_weights(FIXTURE_RUN / "expected.safetensors")
    saved, _ = load_weights(FIXTURE_RUN / "model.safetensors")
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with torch.no_grad():
        torch.testing.assert_close(model.decode(expected["z"]), expected["decoded"])
        torch.testing.assert_close(model.encoder(expected["x"]), expected["phi"])


# ----------------------------------------------------------------------------- the safetensors round trip


def test_state_dict_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    m = SimpleVAE()
    save_weights(tmp_path / "m.safetensors", m.state_dict())
    tensors, _ = load_weights(tmp_path / "m.safetensors")
    m2 = SimpleVAE()
    m2.load_state_dict(tensors)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


# ----------------------------------------------------------------------------- atomic writes


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


def test_written_files_are_readable_by_others(tmp_path):
    from vaekit.checkpoint import atomic_write_bytes

    atomic_write_bytes(tmp_path / "f", b"x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- a consistent checkpoint


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


def train_state(**kw):
    """A TrainState as training takes one: a position, 3 steps of history, an optimizer and the RNGs."""
    from vaekit.checkpoint import Position, TrainState, capture_rng

    model = SimpleVAE(num_filters=4)
    opt = torch.optim.Adam(model.parameters())
    model.log_sig_x.grad = torch.tensor(0.5)
    opt.step()
    position = Position(step=3, epoch=1, batch=2, seconds=4.5, skipped=1, epoch_start_step=2, epoch_start_skipped=1)
    return position, TrainState(**vars(position), elbos=torch.tensor([-3.0, -2.0, -1.0]), optimizer=opt.state_dict(),
                                rng=capture_rng(), **kw)


def test_a_train_state_is_its_position_and_round_trips_with_the_objectives_terms(tmp_path):
    import json

    from vaekit.checkpoint import Position, state_from_tensors, state_to_tensors

    position, state = train_state(extras={"half": torch.tensor([-1.5, -1.0, -0.5])})
    assert isinstance(state, Position) and state.position() == position and type(state.position()) is Position
    tensors, meta = state_to_tensors(state)
    save_weights(tmp_path / "s.safetensors", tensors)
    loaded, _ = load_weights(tmp_path / "s.safetensors")
    back = state_from_tensors(loaded, json.loads(json.dumps(meta)))
    assert back.position() == position and not back.finished and back.objective is None
    assert torch.equal(back.elbos, state.elbos) and back.extras.keys() == {"half"}
    assert torch.equal(back.extras["half"], torch.tensor([-1.5, -1.0, -0.5]))


def test_without_the_objectives_own_terms_a_checkpoint_is_written_as_before():
    """No ``extra/`` tensors unless an objective has terms of its own: the checkpoints of every existing objective
    are what earlier versions wrote, and theirs (none of these tensors) load with no terms."""
    from vaekit.checkpoint import state_to_tensors

    _, state = train_state()
    tensors, meta = state_to_tensors(state)
    assert {k for k in tensors if not k.startswith("optim/")} == {"elbos", "rng/torch", "rng/numpy"}
    assert "extras" not in meta
    _, old, _ = load_checkpoint(FIXTURE_RUN)  # written by vaekit 0.1.0
    assert old.extras == {} and old.objective is None and old.finished


def test_a_term_of_the_wrong_length_is_an_inconsistent_checkpoint(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    tensors, header = load_weights(run / CHECKPOINT)
    tensors["extra/half"] = tensors["elbos"][:-1].clone()
    save_weights(run / CHECKPOINT, tensors, header)
    with pytest.raises(CheckpointError, match="inconsistent position: step 48, 47 values of the term 'half'"):
        load_checkpoint(run)
    tensors["extra/half"] = tensors["elbos"] / 2
    save_weights(run / CHECKPOINT, tensors, header)
    _, state, _ = load_checkpoint(run)
    assert torch.equal(state.extras["half"], state.elbos / 2)


# ----------------------------------------------------------------------------- never unpickling


def test_the_payloads_are_live(tmp_path):
    """Positive control: these files *do* run code when unpickled, so the tests below mean something."""
    s1 = tmp_path / "ran-pickle"
    pickle.loads(pickle_payload(s1))
    assert s1.exists()
    s2, f = tmp_path / "ran-torch-load", tmp_path / "state.pt"
    torch_save_payload(s2, f)
    assert not s2.exists()
    torch.load(f, weights_only=False)
    assert s2.exists()


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}



def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _keyword_is(call, name, value):
    return any(kw.arg == name and isinstance(kw.value, ast.Constant) and kw.value.value is value for kw in call.keywords)


def unsafe_calls(source: str) -> list[str]:
    """What in ``source`` could run code from a file: unpickling imports, bare torch.load, eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"from {node.module} import")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append("from torch import load")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                found.append(f"{name}(")
            elif name == "torch.load" and not _keyword_is(node, "weights_only", True):
                found.append("torch.load( without weights_only=True")
            elif name in ("np.load", "numpy.load") and not all(
                _keyword_is(node, "allow_pickle", False) for kw in node.keywords if kw.arg == "allow_pickle"
            ):
                found.append(f"{name}( with allow_pickle")
    return found


def test_the_scanner_finds_unsafe_calls():
    bad = (
        "import pickle\nfrom dill import load\nx = pickle.loads(b'')\ny = torch.load(f)\n"
        "z = torch.load(f, weights_only=False)\neval('1')\nexec('1')\nnp.load(f, allow_pickle=True)\n"
    )
    assert sorted(unsafe_calls(bad)) == sorted(
        [
            "import pickle",
            "from dill import",
            "torch.load( without weights_only=True",
            "torch.load( without weights_only=True",
            "eval(",
            "exec(",
            "np.load( with allow_pickle",
        ]
    )
    ok = "model.eval()\ntorch.load(f, weights_only=True)\nnp.load(f, allow_pickle=False)\nevaluate_elbo(m)\n"
    assert unsafe_calls(ok) == []


def test_vaekit_source_never_unpickles_or_evals():
    files = sorted(SRC.rglob("*.py"))  # the architectures/ package too
    assert {"checkpoint.py", "runfolder.py", "cli.py"} <= {f.name for f in files}
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "pickle.load" not in text, f
        assert unsafe_calls(text) == [], (f, unsafe_calls(text))
