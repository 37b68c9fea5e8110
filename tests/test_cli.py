"""The vaekit command end to end, on a tiny budget."""

import json
import subprocess
import sys

import pytest
import torch

from vaekit import load_run
from vaekit.cli import main
from vaekit.experiment import RUN_FILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--max-steps", "3", "--epochs", "1", "--eval-samples", "1", "--batch-size", "32", "--num-filters", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--seed", "1", "--out", str(out)]) == 0
    return out


def test_train_writes_the_run_folder(run_dir, capsys):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    for name in ("elbo_curve.png", "samples.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["train"]["max_steps"] == 3 and cfg["train"]["seed"] == 1
    assert cfg["model"] == {"latent_dim": 2, "num_filters": 8, "likelihood": "gaussian", "posterior": "isotropic"}
    assert cfg["data"]["train_images"] == 60000 and cfg["data"]["test_images"] == 10000
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["epoch"] == 1 and row["steps"] == 3
    for key in ("train_elbo", "test_elbo", "test_elbo_se", "sigma_x", "seconds"):
        assert isinstance(row[key], float) and row[key] == row[key], key
    assert row["test_elbo_se"] > 0


def test_the_saved_model_loads(run_dir):
    model, meta = load_run(run_dir)
    assert model.K == 2 and model.num_filters == 8
    assert meta["train"]["batch_size"] == 32
    # the weights were trained (not the fresh initialization of the same seed)
    torch.manual_seed(1)
    from vaekit import SimpleVAE

    fresh = SimpleVAE(num_filters=8)
    assert not torch.equal(fresh.encoder[0].weight, model.encoder[0].weight)


@pytest.fixture
def seen(monkeypatch):
    """Replace training by a stub that records the TrainConfig the CLI built."""
    seen = {}

    def fake_train_run(model_cfg, train_cfg, out, **kw):
        seen["cfg"] = train_cfg
        out.mkdir(parents=True)
        return out

    monkeypatch.setattr("vaekit.experiment.train_run", fake_train_run)
    return seen


def test_preset_assignment_fills_defaults_and_flags_override(tmp_path, seen):
    assert main(["train", "--preset", "assignment", "--epochs", "3", "--out", str(tmp_path / "r")]) == 0
    cfg = seen["cfg"]
    assert (cfg.epochs, cfg.batch_size, cfg.samples, cfg.lr, cfg.calibrated) == (3, 256, 10, 1e-3, False)


def test_existing_output_folder_is_refused(run_dir, capsys):
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_sample(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "16", "--seed", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_figures(tmp_path):
    assert main(["figures", "--out", str(tmp_path)]) == 0
    for name in ("kl_mc_vs_exact.png", "rsample_hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def vaekit(*args):
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=120)


def test_missing_run_folder_is_one_clear_line(tmp_path):
    r = vaekit("sample", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert "nope" in r.stderr and "does not exist" in r.stderr


def test_unreadable_run_folder_is_one_clear_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    r = vaekit("sample", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "config.json" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--samples", "-1"], "--samples"),
        (["train", "--lr", "abc"], "--lr"),
        (["train", "--device", "tpu"], "--device"),
        (["train", "--preset", "slow"], "--preset"),
        (["sample"], "RUN_DIR"),
    ],
)
def test_bad_arguments_get_argparse_errors(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_cuda_request_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_help_lists_the_commands():
    r = vaekit("--help")
    assert r.returncode == 0
    for cmd in ("train", "sample", "figures"):
        assert cmd in r.stdout


def test_time_budget_without_epochs_trains_until_the_budget(tmp_path, seen):
    assert main(["train", "--time-budget", "2.5", "--out", str(tmp_path / "a")]) == 0
    assert seen["cfg"].time_budget == 2.5 and seen["cfg"].epochs == 1000
    assert main(["train", "--time-budget", "2.5", "--epochs", "3", "--out", str(tmp_path / "b")]) == 0
    assert seen["cfg"].epochs == 3
