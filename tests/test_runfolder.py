"""Loading a run folder is safe: every bad file gets one clear CheckpointError naming it, never a crash or
code execution; and a run folder's config.json reads into typed configs, runs of earlier versions included."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from vaekit import CheckpointError, SimpleVAE
from vaekit.checkpoint import load_weights, save_weights
from vaekit.cli import main
from vaekit.runfolder import load_run

from helpers import pickle_payload, torch_save_payload

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_1"


# ============================================================================ loading a run is safe
#
# Loading a run is safe: every bad file gets one clear CheckpointError, never a crash or code execution.
#
# A small real run folder (config.json + model.safetensors of a SimpleVAE with 4 filters)
# is written once per module; each case copies it, breaks one thing, and checks that
# ``load_run`` raises ``CheckpointError`` naming the file and the problem, and that
# ``vaekit sample`` exits with code 2 and one line on stderr. Malicious pickles (checked to be
# live in test_checkpoint.py: they do run code when unpickled) stay inert here.

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CONFIG_DICT = {"model": {"latent_dim": 2, "num_filters": 4}, "data": {"image_size": 28}, "train": {}}


def png_bytes() -> bytes:
    """A valid 1x1 grayscale PNG."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_weights(run / WEIGHTS, SimpleVAE(K=2, num_filters=4).state_dict(), {"format": "vaekit.SimpleVAE"})
    (run / CONFIG).write_text(json.dumps(CONFIG_DICT))
    return run


@pytest.fixture
def run_dir(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    return run


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("VAEKIT_DEBUG", raising=False)  # VAEKIT_DEBUG re-raises on purpose


def test_the_good_run_loads_and_samples(good_run, tmp_path, capsys):
    """Positive control: the untouched folder loads, so every failure below comes from the one change."""
    model, meta = load_run(good_run)
    assert model.K == 2 and model.encoder[0].out_channels == 4 and meta["model"] == CONFIG_DICT["model"]
    expected, _ = load_weights(good_run / WEIGHTS)
    for key, t in model.state_dict().items():
        assert torch.equal(t, expected[key]), key
    out = tmp_path / "grid.png"
    assert main(["sample", str(good_run), "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _state(run):
    return load_weights(run / WEIGHTS)[0]


def _save_state(run, state):
    save_weights(run / WEIGHTS, state)


def _write_config(run, cfg):
    (run / CONFIG).write_text(json.dumps(cfg))


def _edit_config(run, **model):
    cfg = json.loads(json.dumps(CONFIG_DICT))
    cfg["model"].update(model)
    _write_config(run, cfg)


# Each case breaks one thing in a copy of the good folder and returns
# (the path the message must name, fragments that describe the problem).


def case_wrong_shape(run, sentinel):
    state = _state(run)
    state["encoder.5.weight"] = torch.zeros(3, 1599)
    _save_state(run, state)
    return run / WEIGHTS, ["encoder.5.weight", "[3, 1599]", "[3, 1600]"]


def case_wrong_shape_scalar(run, sentinel):
    state = _state(run)
    state["log_sig_x"] = torch.zeros(1)
    _save_state(run, state)
    return run / WEIGHTS, ["log_sig_x", "[1]", "[]"]


def case_config_disagrees_with_weights(run, sentinel):
    _edit_config(run, latent_dim=3)  # weights are for K = 2
    return run / WEIGHTS, ["shape", "expected", "config.json"]


def case_missing_key(run, sentinel):
    state = _state(run)
    del state["decoder.5.bias"]
    _save_state(run, state)
    return run / WEIGHTS, ["missing keys", "decoder.5.bias"]


def case_extra_key(run, sentinel):
    state = _state(run)
    state["encoder.9.weight"] = torch.zeros(2)
    _save_state(run, state)
    return run / WEIGHTS, ["unexpected keys", "encoder.9.weight"]


def _replace_weights(data):
    def case(run, sentinel):
        (run / WEIGHTS).write_bytes(data(run))
        return run / WEIGHTS, ["not a valid safetensors file", f"({len((run / WEIGHTS).read_bytes())} bytes)"]

    return case


case_truncated_half = _replace_weights(lambda run: (b := (run / WEIGHTS).read_bytes())[: len(b) // 2])
case_truncated_5_bytes = _replace_weights(lambda run: (run / WEIGHTS).read_bytes()[:5])
case_empty = _replace_weights(lambda run: b"")
case_random_bytes = _replace_weights(lambda run: random.Random(0).randbytes(4096))
case_json_file = _replace_weights(lambda run: json.dumps(CONFIG_DICT).encode())
case_png_file = _replace_weights(lambda run: png_bytes())
case_header_not_json = _replace_weights(lambda run: struct.pack("<Q", 12) + b"not json at all")


def case_pickle_payload(run, sentinel):
    (run / WEIGHTS).write_bytes(pickle_payload(sentinel))
    return run / WEIGHTS, ["not a valid safetensors file"]


def case_torch_save_payload(run, sentinel):
    torch_save_payload(sentinel, run / WEIGHTS)
    return run / WEIGHTS, ["not a valid safetensors file"]


def case_weights_missing(run, sentinel):
    (run / WEIGHTS).unlink()
    return run / WEIGHTS, ["does not exist"]


def case_weights_is_a_folder(run, sentinel):
    (run / WEIGHTS).unlink()
    (run / WEIGHTS).mkdir()
    return run / WEIGHTS, ["cannot read"]


def case_config_missing(run, sentinel):
    (run / CONFIG).unlink()
    return run / CONFIG, ["does not exist"]


def case_config_not_json(run, sentinel):
    (run / CONFIG).write_text('{"model": {"latent_dim": 2,')
    return run / CONFIG, ["cannot read"]


def case_config_not_utf8(run, sentinel):
    (run / CONFIG).write_bytes(b"\xff\xfe\x00{")
    return run / CONFIG, ["cannot read"]


def case_config_is_a_list(run, sentinel):
    (run / CONFIG).write_text("[1, 2]")
    return run / CONFIG, ["JSON object", "list"]


def case_config_without_model(run, sentinel):
    _write_config(run, {"data": {"image_size": 28}, "train": {}})
    return run / CONFIG, ["not a vaekit run config", "model"]


def case_latent_dim_zero(run, sentinel):
    _edit_config(run, latent_dim=0)
    return run / CONFIG, ["latent_dim", ">= 1", "0"]


def case_latent_dim_string(run, sentinel):
    _edit_config(run, latent_dim="2")
    return run / CONFIG, ["latent_dim"]


def case_model_not_an_object(run, sentinel):
    cfg = dict(CONFIG_DICT, model=[2, 4])
    _write_config(run, cfg)
    return run / CONFIG, ["model"]


def case_data_not_an_object(run, sentinel):
    cfg = dict(CONFIG_DICT, data=[28])
    _write_config(run, cfg)
    return run / CONFIG, ["data"]


def case_run_missing(run, sentinel):
    shutil.rmtree(run)
    return run, ["does not exist or is not a folder"]


def case_run_is_a_file(run, sentinel):
    shutil.rmtree(run)
    run.write_text("not a folder")
    return run, ["does not exist or is not a folder"]


XFAIL: dict[str, str] = {}  # cases the code does not yet handle (strict xfail); none now

CASES = {name[len("case_") :]: f for name, f in sorted(globals().items()) if name.startswith("case_")}
CASE_PARAMS = [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[name])) if name in XFAIL else name
    for name in CASES
]


def _break(run_dir, name):
    sentinel = run_dir.parent / "SENTINEL"
    where, fragments = CASES[name](run_dir, sentinel)
    return sentinel, where, fragments


def _assert_names_file_and_problem(message, where, fragments):
    assert str(where) in message, f"{where} not named in: {message}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_every_case_is_listed():
    assert len(CASES) >= 25 and set(XFAIL) <= set(CASES)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_load_run_raises_one_clear_error(run_dir, name):
    sentinel, where, fragments = _break(run_dir, name)
    with pytest.raises(CheckpointError) as info:
        load_run(run_dir)
    _assert_names_file_and_problem(str(info.value), where, fragments)
    assert "\n" not in str(info.value)
    assert not sentinel.exists(), "loading ran code from the file"


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_cli_sample_exits_2_with_one_line(run_dir, name, capsys):
    sentinel, where, fragments = _break(run_dir, name)
    assert main(["sample", str(run_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("vaekit sample: error: ")
    _assert_names_file_and_problem(lines[0], where, fragments)
    assert not sentinel.exists(), "vaekit sample ran code from the file"
    if run_dir.is_dir():
        assert not list(run_dir.glob("samples_seed*.png"))  # nothing written


@pytest.mark.parametrize("name", ["pickle_payload", "wrong_shape", "config_not_json"])
def test_vaekit_sample_subprocess_has_no_traceback(run_dir, name, tmp_path):
    sentinel, where, fragments = _break(run_dir, name)
    env = {k: v for k, v in os.environ.items() if k != "VAEKIT_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-m", "vaekit", "sample", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vaekit sample: error: ")
    _assert_names_file_and_problem(lines[0], where, fragments)
    assert proc.stdout == ""
    assert not sentinel.exists(), "vaekit sample ran code from the file"


