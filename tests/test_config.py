"""TrainConfig's precision: the one decision (resolve_precision), the deprecated --amp, old configs."""

from __future__ import annotations

import pytest
import torch

from vaekit import config as config_mod
from vaekit.config import TrainConfig, config_from_dict, config_to_dict, resolve_precision, validate


@pytest.fixture
def cpu_probes(monkeypatch):
    """Set what the CPU probes report: (oneDNN bf16, /proc/cpuinfo flags, torch's capability)."""

    def set_probes(mkldnn: bool, flags: set[str] | None, capability: str = "AVX512"):
        monkeypatch.setattr(config_mod, "_mkldnn_bf16_supported", lambda: mkldnn)
        monkeypatch.setattr(config_mod, "cpu_flags", lambda: flags)
        monkeypatch.setattr(config_mod, "_cpu_capability", lambda: capability)

    return set_probes


def test_auto_is_fp32_on_an_avx2_cpu(cpu_probes):
    cpu_probes(False, {"avx2", "fma"}, "AVX2")
    dtype, why = resolve_precision("auto", "cpu")
    assert dtype is None
    assert why == "auto: this CPU has no native bf16: AVX2, oneDNN has no bf16"


def test_auto_is_fp32_on_avx512_without_bf16(cpu_probes):
    # oneDNN runs bf16 on plain AVX-512 (by converting in software): the CPU flags decide
    cpu_probes(True, {"avx2", "avx512f", "avx512bw"}, "AVX512")
    assert resolve_precision("auto", "cpu") == (None, "auto: this CPU has no native bf16: AVX512")


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_fp32_on_native_bf16_while_its_quality_is_unproven(cpu_probes, flag, monkeypatch):
    monkeypatch.setattr(config_mod, "BF16_PROVEN_EQUAL", False)  # as before benchmarks/precision.py passed
    cpu_probes(True, {"avx2", "avx512f", flag}, "AVX512")
    dtype, why = resolve_precision("auto", "cpu")
    assert dtype is None and why.startswith(f"auto: this CPU has native bf16: AVX512, {flag}, but bf16 training is not yet proven")


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(cpu_probes, flag):
    assert config_mod.BF16_PROVEN_EQUAL  # benchmarks/precision.py passed (benchmarks/README.md)
    cpu_probes(True, {"avx2", "avx512f", flag}, "AVX512")
    dtype, why = resolve_precision("auto", torch.device("cpu"))
    assert dtype is torch.bfloat16
    assert why == f"auto: this CPU has native bf16: AVX512, {flag}"


def test_auto_needs_both_probes(cpu_probes):
    cpu_probes(False, {"avx512_bf16"})  # the flag, but a torch without oneDNN bf16
    assert resolve_precision("auto", "cpu")[0] is None
    cpu_probes(True, None)  # no /proc/cpuinfo (macOS, Windows): fp32, the safe choice
    assert resolve_precision("auto", "cpu") == (None, "auto: this CPU has no native bf16: AVX512, CPU flags unreadable")


def test_explicit_choices(cpu_probes):
    cpu_probes(False, {"avx2"}, "AVX2")
    assert resolve_precision("fp32", "cpu") == (None, "asked for")
    dtype, why = resolve_precision("bf16", "cpu")
    assert dtype is torch.bfloat16 and "emulated here" in why
    cpu_probes(True, {"amx_bf16"})
    assert resolve_precision("bf16", "cpu") == (torch.bfloat16, "asked for")
    cpu_probes(True, {"amx_bf16"})
    assert resolve_precision("fp32", "cpu")[0] is None  # fp32 is fp32 everywhere
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_auto_on_cuda_follows_is_bf16_supported(monkeypatch):
    monkeypatch.setattr(config_mod, "BF16_PROVEN_EQUAL", True)
    monkeypatch.setattr(config_mod, "_cuda_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda") == (torch.bfloat16, "auto: this GPU has native bf16")
    monkeypatch.setattr(config_mod, "_cuda_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cuda") == (None, "auto: this GPU has no native bf16")
    assert resolve_precision("auto", "mps") == (None, "auto: bf16 autocast is not used on mps")


def test_the_probes_run_on_this_machine():
    native, what = config_mod.cpu_bf16_native()
    assert isinstance(native, bool) and what
    flags = config_mod.cpu_flags()
    if flags is not None and not flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        assert resolve_precision("auto", "cpu")[0] is None


def test_amp_is_a_deprecated_alias_of_bf16():
    assert TrainConfig(amp=True).precision == "bf16"
    assert TrainConfig(amp=True, precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="contradicts"):
        TrainConfig(amp=True, precision="fp32")
    validate(TrainConfig(amp=True))


def test_old_configs_load_with_their_precision_and_monitor():
    old = {k: v for k, v in config_to_dict(TrainConfig()).items() if k not in ("precision", "monitor_samples", "monitor_images")}
    # written by an earlier vaekit: fp32 (or bf16 with "amp": true), every epoch on the full test set
    cfg = config_from_dict(TrainConfig, {**old, "amp": False, "eval_samples": 3})
    assert (cfg.precision, cfg.monitor_samples, cfg.monitor_images) == ("fp32", 3, None)
    assert config_from_dict(TrainConfig, {**old, "amp": True}).precision == "bf16"
    # a new config round-trips
    new = TrainConfig(precision="bf16", monitor_samples=2, monitor_images=100)
    assert config_to_dict(config_from_dict(TrainConfig, config_to_dict(new))) == config_to_dict(new)
    assert config_from_dict(TrainConfig, config_to_dict(TrainConfig())).precision == "auto"


def test_the_cli_has_precision_and_keeps_amp(capsys):
    from vaekit.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--precision", "bf16", "--monitor-images", "100", "--monitor-samples", "2"])
    cfg = config_from_args(TrainConfig, args)
    assert (cfg.precision, cfg.monitor_images, cfg.monitor_samples) == ("bf16", 100, 2)
    assert config_from_args(TrainConfig, build_parser().parse_args(["train", "--amp"])).precision == "bf16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--precision", "fp16"])
