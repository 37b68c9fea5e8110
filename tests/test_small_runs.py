"""Runs on tiny datasets end complete: every figure adapts to a test set of 1, 2, 5 or 31 images (or is skipped
with one line saying why), a figure that fails never costs the run its model, metrics or report, a batch larger
than the training set trains on all of it, and a run leaves no lock file and removes its interrupted saves'
temporary files."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import wait_for_checkpoint
from vaekit.checkpoint import CHECKPOINT, LOCK_FILE, load_weights, save_weights
from vaekit.cli import main
from vaekit.config import TrainConfig
from vaekit.data import DatasetError, ImageData, check_min_images
from vaekit.experiment import RUN_FILES, figures_run, fit_batch_to_data

FAST = ["--num-filters", "4", "--eval-samples", "1", "--device", "cpu", "--no-progress", "--seed", "3"]
SIDE = 16  # image side: the conv nets halve it 3 times


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("VAEKIT_DEBUG", raising=False)  # VAEKIT_DEBUG re-raises on purpose


def write_npz(path: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Grey images with two labels and a given split: x_train [n_train, S, S], x_test [n_test, S, S]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIDE)[None, :, None]  # [1, S, 1] a vertical gradient, so the images differ by more than noise

    def images(n):
        level = rng.random((n, 1, 1))
        return np.clip(255 * (level * ramp + 0.2 * rng.random((n, SIDE, SIDE))), 0, 255).astype(np.uint8)

    np.savez(path, x_train=images(n_train), x_test=images(n_test),
             y_train=rng.integers(0, 2, n_train), y_test=rng.integers(0, 2, n_test))
    return path


def write_png_folder(folder: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """``classes[name]`` PNG files in ``folder/name/`` (name "" for files in the folder itself)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(folder / name / f"{i:03d}.png")
    return folder


def listing(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


def assert_complete(run: Path, skipped: set[str] = frozenset()) -> None:
    """The run folder holds the model, metrics, config, report and checkpoint, every figure but ``skipped``,
    and no lock or temporary file."""
    names = listing(run)
    assert set(RUN_FILES) - skipped <= names, sorted(set(RUN_FILES) - names)
    assert not skipped & names, sorted(skipped & names)
    assert LOCK_FILE not in names and not [n for n in names if n.endswith(".tmp")], sorted(names)
    for name in names & set(RUN_FILES):
        assert (run / name).stat().st_size > 0, name


# ----------------------------------------------------------------------------- every figure adapts to small test sets


class Spy:
    """Wraps a plotting function: records its arguments, then draws."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("m,k", [(1, 2), (1, 3), (2, 3), (5, 2), (31, 2)])
def test_a_run_with_few_test_images_ends_complete(m, k, tmp_path, monkeypatch, capsys):
    import vaekit.experiment as experiment

    spies = {name: Spy(getattr(experiment, name)) for name in ("plot_reconstructions", "interpolate")}
    for name, spy in spies.items():
        monkeypatch.setattr(experiment, name, spy)
    data = write_npz(tmp_path / "tiny.npz", 24, m)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--out", str(run), "--batch-size", "8", "--max-steps", "3",
                 "--latent-dim", str(k), *FAST]) == 0
    err = capsys.readouterr().err
    skipped = ({"interpolations.png"} if m < 2 else set()) | ({"latent_map.png"} if k > 2 and m < 3 else set())
    assert_complete(run, skipped)
    # one line on stderr per skipped figure, naming it and the count; the report says the same
    report = (run / "report.html").read_text()
    notes = [line for line in err.splitlines() if "skipped" in line]
    assert sorted(line.split()[2] for line in notes) == sorted(skipped), err
    for line in notes:
        assert line.startswith("vaekit: note: ") and f"the test set has {m}" in line
        assert line.removeprefix("vaekit: note: ") in report
    assert "Traceback" not in err
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["test_images"] == m and math.isfinite(row["test_elbo"])
    assert math.isnan(row["test_elbo_se"]) == (m == 1)  # a standard error needs two images
    # reconstructions: min(16, M) test images; interpolations: min(8, M // 2) pairs of distinct test images
    (images, recon, _), = spies["plot_reconstructions"].calls
    assert images.shape == recon.shape == (min(16, m), 1, SIDE, SIDE)
    assert len(set(indices_in_test_split(data, images))) == min(16, m)
    if m < 2:
        assert spies["interpolate"].calls == []
        return
    (_, a, b), = spies["interpolate"].calls
    ends = indices_in_test_split(data, torch.cat([a, b]))  # which test image each end of each line is
    assert len(a) == min(8, m // 2) and len(set(ends)) == 2 * len(a), ends


def indices_in_test_split(data: Path, images: torch.Tensor) -> list[int]:
    """For each of ``images`` [X, 1, S, S] (bytes, or floats u8 / 255), the index of the equal image in the
    test split of the .npz file ``data`` (brute force); fails if one is not there."""
    x_test = torch.from_numpy(np.load(data)["x_test"]).float()  # [M, S, S]
    found = images.float()[:, 0] * (255.0 if images.is_floating_point() else 1.0)  # [X, S, S]
    same = (found[:, None].round() == x_test[None]).flatten(2).all(dim=2)  # [X, M]
    assert same.any(dim=1).all(), "an image shown is not a test image"
    return same.int().argmax(dim=1).tolist()


def test_a_single_class_dataset_trains_and_reports(tmp_path, capsys):
    folder = write_png_folder(tmp_path / "one-class", {"faces": 30})
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(folder), "--out", str(run), "--batch-size", "9", "--max-steps", "3", *FAST]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert_complete(run)
    info = json.loads((run / "config.json").read_text())["data"]["info"]
    assert info["labelled"] is True and info["classes"] == ["faces"] and info["test"] == 3  # round(0.1 x 30)


def test_a_figure_that_fails_is_skipped_and_the_run_still_ends_complete(tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr("vaekit.experiment.plot_latent_scatter", boom)
    data = write_npz(tmp_path / "tiny.npz", 16, 4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "latent_scatter.png").write_bytes(b"an older run's figure")  # must not stand in for this run's
    assert main(["train", "--dataset", str(data), "--out", str(run), "--overwrite", "--batch-size", "8",
                 "--max-steps", "2", *FAST]) == 0
    err = capsys.readouterr().err
    assert_complete(run, skipped={"latent_scatter.png"})
    line = "latent_scatter.png skipped: RuntimeError: the plotting library broke"
    assert f"vaekit: note: {line}" in err.splitlines() and line in (run / "report.html").read_text()
    # redrawing the figures (`vaekit figures RUN_DIR`) goes on the same way
    (run / "interpolations.png").unlink()
    written = figures_run(run)
    assert run / "interpolations.png" in written and run / "latent_scatter.png" not in written
    assert not (run / "latent_scatter.png").exists() and (run / "interpolations.png").exists()


# ----------------------------------------------------------------------------- the two cases of the report, as run


def run_vaekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_an_npy_of_200_float_faces_with_20_test_images_trains_to_a_complete_run(tmp_path):
    """As the report: float64 [200, 25, 25] in [0, 1] (the shape of scikit-image's LFW faces), batch 20 (4 steps,
    not the report's 40: the figures failed on the test set's size, 20, whatever the steps)."""
    np.save(tmp_path / "lfw.npy", np.random.default_rng(0).random((200, 25, 25)))
    p = run_vaekit("train", "--dataset", "lfw.npy", "--batch-size", "20", "--max-steps", "4", "--out", "run", *FAST, cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert_complete(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["test_images"] == 20


def test_a_folder_of_240_images_in_two_classes_trains_to_a_complete_run(tmp_path):
    """As the report: two class folders of 120 PNGs, the default test fraction (24 test images) and batch."""
    write_png_folder(tmp_path / "pets", {"cats": 120, "dogs": 120})
    p = run_vaekit("train", "--dataset", "pets", "--max-steps", "4", "--out", "run", *FAST, cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert_complete(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (meta["data"]["train_images"], meta["data"]["test_images"], meta["train"]["batch_size"]) == (216, 24, 64)


# ----------------------------------------------------------------------------- a batch larger than the training set


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")[0]


def test_a_batch_larger_than_the_training_set_trains_on_all_of_it_as_one_batch(tmp_path, capsys):
    """A first folder of 40 images (36 train) with the default batch of 64: the same weights as --batch-size 36."""
    folder = write_png_folder(tmp_path / "forty", {"": 40})
    args = ["train", "--dataset", str(folder), "--max-steps", "2", *FAST]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out
    note = "note: batch size 64 is larger than the 36 training images; training on all 36 as one batch"
    assert out.splitlines().count(note) == 1
    meta = json.loads((tmp_path / "default" / "config.json").read_text())
    assert meta["train"]["batch_size"] == 36 and meta["notes"] == [note.removeprefix("note: ")]
    assert note.removeprefix("note: ") in (tmp_path / "default" / "report.html").read_text()
    assert_complete(tmp_path / "default")
    assert main([*args, "--batch-size", "36", "--out", str(tmp_path / "explicit")]) == 0
    assert "larger than the" not in capsys.readouterr().out
    a, b = weights(tmp_path / "default"), weights(tmp_path / "explicit")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_whole_set_batch_run_resumes_bit_identically(tmp_path):
    """A run stopped after 2 of 4 steps, its config and checkpoint made those of a 4-step run (what a kill at step 2
    leaves), resumes to the weights of the uninterrupted 4-step run: config.json holds the batch used."""
    folder = write_png_folder(tmp_path / "forty", {"": 40})
    args = ["train", "--dataset", str(folder), "--lr-schedule", "constant", *FAST]  # one step per epoch
    assert main([*args, "--max-steps", "4", "--out", str(tmp_path / "full")]) == 0
    half = tmp_path / "half"
    assert main([*args, "--max-steps", "2", "--out", str(half)]) == 0
    cfg = json.loads((half / "config.json").read_text())
    assert cfg["train"]["batch_size"] == 36
    cfg["train"]["max_steps"] = 4
    (half / "config.json").write_text(json.dumps(cfg))
    tensors, header = load_weights(half / CHECKPOINT)
    info = json.loads(header["vaekit"])
    assert info["step"] == 2 and info["finished"]
    info.update(finished=False, config=cfg)
    save_weights(half / CHECKPOINT, tensors, {"vaekit": json.dumps(info)})
    assert main(["train", "--resume", str(half), "--no-progress"]) == 0
    a, b = weights(half), weights(tmp_path / "full")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in b)
    assert [r["steps"] for r in map(json.loads, (half / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]


def test_a_data_parallel_batch_larger_than_the_training_set_is_refused(tmp_path):
    """Data-parallel runs keep the clear error: each process needs its share of every batch."""
    cfg = TrainConfig(batch_size=32)
    assert fit_batch_to_data(cfg, 31, world=2) is None and cfg.batch_size == 32
    assert fit_batch_to_data(cfg, 32, world=1) is None and cfg.batch_size == 32  # one batch of all 32: as asked
    assert fit_batch_to_data(cfg, 31, world=1) == (
        "batch size 32 is larger than the 31 training images; training on all 31 as one batch") and cfg.batch_size == 31
    data = ImageData("forty", train_uint8=torch.zeros(40, 1, 4, 4, dtype=torch.uint8), train_labels=torch.zeros(40, dtype=torch.long),
                     test_uint8=torch.zeros(4, 1, 4, 4, dtype=torch.uint8), test_labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(DatasetError, match=r"40 training images, fewer than one global batch of 64 \(--batch-size 32 x 2 "
                                           r"processes\); lower --batch-size to at most 20"):
        check_min_images(data, 64, processes=2)
    check_min_images(data, 40, processes=2)


# ----------------------------------------------------------------------------- what a run leaves in its folder


def killed_saves(*paths: Path) -> list[Path]:
    """The temporary files that ``atomic_write`` of ``paths`` leaves when SIGKILL lands inside it (one process,
    a thread per file, each killed mid-write)."""
    code = ("import sys, threading, time\nfrom vaekit.checkpoint import atomic_write\n"
            "started = threading.Barrier(len(sys.argv))\n"
            "def write(f):\n    f.write(b'x' * 4096); f.flush(); started.wait(); time.sleep(120)\n"
            "for p in sys.argv[1:]:\n    threading.Thread(target=atomic_write, args=(p, write), daemon=True).start()\n"
            "started.wait(); print('writing', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    left = []
    for path in paths:
        mine = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]
        assert len(mine) == 1 and mine[0].stat().st_size == 4096, mine
        left += mine
    return left


LOOKALIKES = [  # a user's files, and names near atomic_write's: all must survive
    "notes.txt", ".checkpoint.safetensors.tmp", ".checkpoint.safetensors.abc123.tmp", ".checkpoint.safetensors.ABCD1234.tmp",
    "checkpoint.safetensors.abcd1234.tmp", ".checkpoint.safetensors.abcd1234.tmp.keep", ".checkpoint.safetensors.abcd1234.temp",
    ".mydata.npy.abcd1234.tmp", ".eval_test.json.abcd1234.tmp",
]


def test_resume_removes_the_temporary_files_of_killed_saves_and_nothing_else(tmp_path, capsys):
    data = write_npz(tmp_path / "tiny.npz", 16, 4)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--out", str(run), "--batch-size", "8", "--max-steps", "2", *FAST]) == 0
    stale = killed_saves(run / CHECKPOINT, run / "model.safetensors", run / "report.html")
    for name in LOOKALIKES:
        (run / name).write_bytes(b"keep me")
    (run / ".metrics.jsonl.abcd1234.tmp").mkdir()  # a folder of that name is not a file atomic_write made
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert f"note: removed 3 temporary files that interrupted saves left in {run}" in capsys.readouterr().out
    assert not any(p.exists() for p in stale)
    assert all((run / name).read_bytes() == b"keep me" for name in LOOKALIKES)
    assert (run / ".metrics.jsonl.abcd1234.tmp").is_dir() and LOCK_FILE not in listing(run)


def test_a_new_run_over_an_old_folder_removes_its_killed_saves(tmp_path):
    data = write_npz(tmp_path / "tiny.npz", 16, 4)
    run = tmp_path / "run"
    run.mkdir()
    stale, = killed_saves(run / CHECKPOINT)
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--dataset", str(data), "--out", str(run), "--overwrite", "--batch-size", "8", "--max-steps", "1", *FAST]) == 0
    assert not stale.exists() and (run / "notes.txt").read_text() == "mine"
    assert_complete(run)


def test_a_run_interrupted_by_sigint_leaves_no_lock_file(tmp_path):
    data = write_npz(tmp_path / "tiny.npz", 16, 4)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--dataset", str(data), "--out", str(run), "--batch-size", "8",
                             "--epochs", "500", "--checkpoint-every", "1", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run, proc, 2)
    assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # held while it trains
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert LOCK_FILE not in listing(run) and os.path.exists(run / CHECKPOINT)
