"""Typed configuration: one dataclass per concern, saved with every run.

The command line is derived from these dataclasses (see ``cli.py``): each field is a
flag (``batch_size`` -> ``--batch-size``) whose help text is the field's ``help``
metadata. A config that chooses parts (``ModelConfig``: an architecture, a likelihood, a
posterior and a prior; ``TrainConfig``: an objective) holds the chosen parts' own options in
one dict, ``options`` (``{"hidden": "200,200"}``); each option is a flag too (``--hidden``),
and config.json records the options of the chosen parts only. ``resolve_device`` is the one
place where ``device="auto"`` becomes a device, and ``resolve_precision`` the one place where
``precision="auto"`` becomes fp32 or bf16.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .architectures import ARCHITECTURES
from .conditions import CONDITIONS
from .data.config import DataConfig  # re-exported: it lives with the data
from .likelihoods import LIKELIHOODS
from .objectives import OBJECTIVES
from .posteriors import POSTERIORS
from .priors import PRIORS
from .registry import Registry, field_kind, option
from .registry import validate as validate_fields

__all__ = [
    "ModelConfig", "TrainConfig", "PRESETS", "resolve_device", "resolve_precision", "config_to_dict", "config_from_dict",
    "field_kind", "validate", "AUTO_ARCHES",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
_f = option  # the field helper: default, help, bounds


class PartsConfig:
    """A config dataclass that chooses parts: ``PARTS`` maps each of its fields that names a part to that
    kind's registry, and ``options`` holds the chosen parts' options by name.

    Its constructor also takes the options as keywords, ``ModelConfig(arch="mlp", hidden="300,300")``
    being ``ModelConfig(arch="mlp", options={"hidden": "300,300"})``; a keyword that is neither a
    field nor an option of any registered part is a TypeError, as for any dataclass.
    """

    PARTS: ClassVar[dict[str, Registry]] = {}
    #: parts fields for which None means "no such part" (not "chosen later"): their options need the part chosen
    OPTIONAL_PARTS: ClassVar[tuple[str, ...]] = ()
    options: dict[str, Any]

    def __init__(self, **kwargs: Any) -> None:
        opts = dict(kwargs.pop("options", None) or {})
        names = {f.name for f in dataclasses.fields(self)}
        takes = {n for reg in self.PARTS.values() for n in reg.option_fields()}
        for f in dataclasses.fields(self):
            if f.name == "options":
                continue
            if f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            setattr(self, f.name, value)
        for key, value in kwargs.items():
            if key in names or key not in takes:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {key!r}")
            opts[key] = value
        self.options = opts
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def part_options(self, field_name: str) -> Any:
        """The chosen part's options (an ``Options`` dataclass, defaults filled in), validated."""
        reg = self.PARTS[field_name]
        name = getattr(self, field_name)
        return reg.options(name, reg.pick_options(name, self.options))

    def check_options(self) -> None:
        """Every option given is taken by a chosen part (a part still None takes any of its kind's options)."""
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a dict of option names to values, got {self.options!r}")
        for key in self.options:
            owners = [(f, reg) for f, reg in self.PARTS.items() if key in reg.option_fields()]
            if not owners:
                raise ValueError(f"{key} is not an option of any {' or '.join(r.kind for r in self.PARTS.values())}")
            if any((getattr(self, f) is None and f not in self.OPTIONAL_PARTS) or
                   (getattr(self, f) is not None and key in reg[getattr(self, f)].option_names()) for f, reg in owners):
                continue
            f, reg = owners[0]
            chosen = getattr(self, f)
            if chosen is None:  # an optional part that is not chosen (no condition)
                parts = " or ".join(reg.option_fields()[key][1])
                raise ValueError(f"--{key.replace('_', '-')} is an option of {reg.kind} {parts}; give --{f} {parts.split(' or ')[0]} too")
            parts = ", ".join(reg.option_fields()[key][1])
            takes = ", ".join(f"--{n.replace('_', '-')}" for n in reg[chosen].option_names()) or "no options"
            raise ValueError(f"--{key.replace('_', '-')} is an option of {reg.kind} {parts}, not of {reg.kind} {chosen} (which takes {takes})")
        for f in self.PARTS:
            if getattr(self, f) is not None:
                self.part_options(f)  # each value's type and bounds

    def recorded_options(self) -> dict[str, Any]:
        """The options to record: every option of each chosen part (defaults filled in), else as given."""
        out: dict[str, Any] = {}
        for f, reg in self.PARTS.items():
            if getattr(self, f) is None:
                out.update({k: v for k, v in self.options.items() if k in reg.option_fields()})
            else:
                out.update(dataclasses.asdict(self.part_options(f)))
        return out


#: the architectures ``arch=None`` may become (``resolve_arch``)
AUTO_ARCHES = ("assignment", "conv")


@dataclass(init=False)
class ModelConfig(PartsConfig):
    """The VAE: its networks (an architecture), latent size, likelihood, posterior and prior, and their options.

    Saved in every run's config.json; ``model.build_model`` rebuilds the model from it and
    the data's image shape.
    """

    PARTS: ClassVar[dict[str, Registry]] = {
        "arch": ARCHITECTURES, "likelihood": LIKELIHOODS, "posterior": POSTERIORS, "prior": PRIORS, "condition": CONDITIONS,
    }
    OPTIONAL_PARTS: ClassVar[tuple[str, ...]] = ("condition",)

    arch: str | None = _f(
        None,
        "networks (default: assignment for 28x28 single-channel images, conv otherwise)",
        choices=ARCHITECTURES,  # the registry itself: an architecture added to it is a valid choice
    )
    latent_dim: int = _f(2, "latent dimensionality K", min=1)
    likelihood: str = _f("gaussian", "decoder likelihood p(x|z)", choices=LIKELIHOODS)
    posterior: str = _f("isotropic", "encoder posterior q(z|x)", choices=POSTERIORS)
    prior: str = _f("standard-normal", "prior p(z)", choices=PRIORS)
    condition: str | None = _f(
        None, "condition the model on c: q(z|x, c), p(x|z, c) (a conditional VAE; default: none)", choices=CONDITIONS,
    )
    options: dict = field(default_factory=dict, metadata={"help": "the chosen parts' options, by name"})

    def resolved(self, image_shape: tuple[int, int, int], data: Any = None) -> "ModelConfig":
        """A copy with ``arch`` chosen for these images where it is None: "assignment" for 28x28 grey, else "conv";
        and with ``data`` (the training ``ImageData``), the condition's options that come from it (the classes)."""
        arch = self.arch if self.arch is not None else ("assignment" if tuple(image_shape) == (1, 28, 28) else "conv")
        options = dict(self.options)
        if self.condition is not None and data is not None:
            options.update(CONDITIONS[self.condition].options_from_data(CONDITIONS.pick_options(self.condition, options), data))
        return dataclasses.replace(self, arch=arch, options=options)


@dataclass(init=False)
class TrainConfig(PartsConfig):
    """How a model is trained (the defaults are the 'quick' preset), with the objective's options."""

    PARTS: ClassVar[dict[str, Registry]] = {"objective": OBJECTIVES}

    dataset: str = _f("mnist", "mnist, fashion-mnist, or a path: a folder of images, a .npy/.npz file, or a folder of the four IDX files")
    epochs: int = _f(4, "passes over the training set", min=1)
    batch_size: int = _f(64, "images per optimizer step", min=1)
    objective: str = _f("elbo", "what training maximizes", choices=OBJECTIVES)
    beta: float = _f(1.0, "weight of the KL term (beta-VAE, Higgins et al. 2017; 1 = the ELBO)", min=0.0)
    kl_warmup: int = _f(0, "KL warm-up: beta rises linearly from 0 to --beta over this many steps (0: off)", min=0)
    lr: float = _f(1.5e-3, "Adam learning rate", gt=0.0)
    lr_schedule: str = _f(
        "anneal",
        "learning-rate schedule over the run (steps or time budget): constant; cosine; "
        "anneal = constant, then linear to 0 over the last 20%%",
        choices=("constant", "cosine", "anneal"),
    )
    lr_warmup: int = _f(
        0, "learning-rate warm-up: the lr rises linearly from lr/N to lr over the first N steps (0: off); at lr >= 1e-3 "
        "it keeps the assignment's conv encoder from dying (all ReLUs off: 0 active units) in its first steps", min=0,
    )
    calibrated: bool = _f(
        True, "set log_sig_x to its per-batch optimum 0.5*log(MSE) (Rybkin et al. 2021) instead of learning it"
    )
    binarize: str = _f(
        "none",
        "binarize pixels: none; dynamic = a fresh Bernoulli draw of every training batch (test set drawn once, "
        "fixed seed); static = train and test drawn once (fixed seed)",
        choices=("none", "dynamic", "static"),
    )
    seed: int = _f(0, "random seed (data order, initialization, samples of z)")
    device: str = _f("auto", "where to train; auto picks cuda, then mps, then cpu", choices=DEVICES)
    max_steps: int | None = _f(None, "stop after this many optimizer steps in total", min=1)
    time_budget: float | None = _f(None, "stop after this many minutes of training, then evaluate and save", gt=0.0)
    checkpoint_every: int | None = _f(None, "also write a checkpoint every N optimizer steps (one is written at every epoch end)", min=1)
    skip_nonfinite: bool = _f(False, "skip a batch whose loss or gradient is NaN/Inf (and count it) instead of stopping")
    grad_normalize: bool = _f(
        False, "divide each parameter tensor's gradient by its own norm before the optimizer step (Tomczak & Welling's "
        "AdamNormGrad, their VampPrior recipe); before --grad-clip",
    )
    grad_clip: float | None = _f(None, "clip the global gradient norm (all parameters as one vector) to this before each optimizer step; none: off", gt=0.0)
    eval_samples: int = _f(10, "samples of z per image for the final test ELBO (all test images, at the end of training)", min=1)
    monitor_samples: int = _f(
        1, "samples of z per image for the per-epoch test ELBO before the last epoch (measured: SE < 2 nats, benchmarks/README.md)", min=1,
    )
    monitor_images: int | None = _f(
        None, "test images (a fixed random subset of N) for the per-epoch test ELBO before the last epoch (default: all; "
        "fewer than ~9,000 MNIST images give an SE above 2 nats)", min=1,
    )
    precision: str = _f(
        "auto",
        "network arithmetic: auto = bf16 autocast where the device does bf16 natively (CUDA with bf16, CPUs with "
        "AVX512_BF16 or AMX), else fp32; the objective, optimizer and weights stay fp32",
        choices=PRECISIONS,
    )
    compile: bool = _f(False, "torch.compile the model (faster on CUDA after a warm-up)")
    amp: bool = _f(False, "deprecated: the same as --precision bf16 (kept so that old commands and runs still work)")
    tensorboard: bool = _f(False, "also log scalars and sample grids to RUN_DIR/tensorboard (needs the tensorboard package)")
    options: dict = field(default_factory=dict, metadata={"help": "the objective's options, by name"})

    def __post_init__(self) -> None:
        if self.amp is True:  # the deprecated flag: bf16 autocast
            if self.precision == "fp32":
                raise ValueError("amp (deprecated) means precision bf16, which contradicts precision fp32")
            self.precision = "bf16"


PRESETS: dict[str, dict[str, Any]] = {
    # measured to win on time-to-quality on a 2-core CPU (benchmarks/README.md)
    "quick": {},
    # the assignment's recipe: 20 epochs, batch 256, 10 samples of z, Adam 1e-3, learned sigma_x
    "assignment": {
        "epochs": 20,
        "batch_size": 256,
        "samples": 10,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "calibrated": False,
    },
}


def validate(cfg: Any) -> None:
    """Check each field's type and bounds against its metadata, and a parts config's options against the
    chosen parts; ValueError naming the field or option."""
    validate_fields(cfg)
    if isinstance(cfg, PartsConfig):
        cfg.check_options()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The one place where "auto" is resolved: CUDA first, then Apple's MPS, then CPU."""
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested, but CUDA is not available on this machine; use --device cpu or auto")
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} was requested, but MPS is not available on this machine; use --device cpu or auto")
    return torch.device(name)


#: Whether bf16 training is proven as good as fp32: auto picks bf16 (where it is native) only then.
#: The rule: benchmarks/precision.py's delta (bf16 - fp32 test ELBO of the quick preset, 3 seeds) >= -1 nat.
#: Passed on native bf16 hardware: an H200 (600 steps, delta=+0.35, 2026-11-26) and a 2-core AMD EPYC with
#: avx512_bf16 (600 steps, delta=+1.16 +- 2.11, bf16 training 1.8-2.2x as fast; 2026-11-29; benchmarks/README.md).
BF16_PROVEN_EQUAL = True


def resolve_precision(precision: str, device: str | torch.device) -> tuple[torch.dtype | None, str]:
    """The one place where ``precision`` becomes the networks' autocast dtype: (bfloat16 or None for fp32, why).

    ``auto`` picks bf16 only where the device computes it natively, so that it is faster, and only
    once bf16 training is proven as good as fp32 (``BF16_PROVEN_EQUAL``; until then fp32):
    CUDA GPUs for which ``torch.cuda.is_bf16_supported()`` holds, and CPUs with AVX512_BF16
    or AMX (``cpu_bf16_native``). Elsewhere bf16 is emulated (on AVX2-only CPUs slower than
    fp32) and auto picks fp32. ``bf16`` forces autocast (emulated if need be); ``fp32`` turns it off.
    Only the networks run under autocast: objective, KL, log-likelihoods, optimizer and weights stay fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp32":
        return None, "asked for"
    if precision == "bf16":
        native, why = _bf16_native(kind)
        return torch.bfloat16, "asked for" + ("" if native else f"; emulated here ({why}), likely slower than fp32")
    native, why = _bf16_native(kind)
    if native and BF16_PROVEN_EQUAL:
        return torch.bfloat16, f"auto: {why}"
    if native:
        return None, f"auto: {why}, but bf16 training is not yet proven as good as fp32 (benchmarks/precision.py); --precision bf16 uses it"
    return None, f"auto: {why}"


def _bf16_native(kind: str) -> tuple[bool, str]:
    """Whether a device of this kind computes bf16 natively, and a short reason."""
    if kind == "cuda":
        if _cuda_bf16_supported():
            return True, "this GPU has native bf16"
        return False, "this GPU has no native bf16"
    if kind == "cpu":
        native, what = cpu_bf16_native()
        return native, f"this CPU has {'native bf16' if native else 'no native bf16'}: {what}"
    return False, f"bf16 autocast is not used on {kind}"


def _cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no including_emulation
        return bool(torch.cuda.is_bf16_supported())


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU does bf16 natively (oneDNN has bf16 kernels and the CPU has AVX512_BF16 or AMX); (bool, what).

    Two probes must agree: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (oneDNN will run bf16
    convolutions and matmuls; on x86 it is also true for plain AVX-512, where bf16 is converted
    in software) and the CPU's own flags (``cpu_flags``: avx512_bf16 or amx_bf16 in /proc/cpuinfo;
    on ARM, bf16). torch's dispatch level ``torch.backends.cpu.get_cpu_capability()`` names the
    vector unit in the reason but cannot tell AVX-512 with and without bf16 apart.
    """
    capability = _cpu_capability()
    if not _mkldnn_bf16_supported():
        return False, f"{capability}, oneDNN has no bf16"
    flags = cpu_flags()
    if flags is None:
        return False, f"{capability}, CPU flags unreadable"
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if native:
        return True, f"{capability}, {'+'.join(native)}"
    return False, capability


def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch
        return "unknown vector unit"


def _mkldnn_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch
        return False


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 "flags", ARM "Features"); None where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as config.json records it: every field, and for a parts config the chosen parts' options only."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, PartsConfig):
        out["options"] = cfg.recorded_options()
        for f in cfg.OPTIONAL_PARTS:  # no such part (no condition): config.json as before the kind existed
            if out.get(f) is None:
                out.pop(f, None)
    return out


#: option fields that earlier versions of vaekit wrote into config.json as plain fields, by config class
LEGACY_OPTION_FIELDS = {"ModelConfig": ("num_filters", "depth", "hidden", "activation"), "TrainConfig": ("samples", "iw_samples")}


def config_from_dict(cls: type, data: dict[str, Any]):
    """Build a config from a dict, ignoring unknown keys (newer files) and keeping defaults for missing ones.

    Runs of earlier versions recorded every architecture's and objective's options as plain fields
    (``"hidden": "200,200"`` whatever the architecture): those of the chosen part become its options,
    the others are dropped.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    if issubclass(cls, PartsConfig):
        options = dict(values.pop("options", None) or {})
        legacy = {k: data[k] for k in LEGACY_OPTION_FIELDS.get(cls.__name__, ()) if k in data and data[k] is not None}
        for f, reg in cls.PARTS.items():
            chosen = values.get(f, cls.__dataclass_fields__[f].default)
            # arch None (runs of vaekit 0.1) becomes one of AUTO_ARCHES: keep what all of them take
            if chosen is None and f in cls.OPTIONAL_PARTS:  # no such part (no condition): none of its options
                takes: set[str] = set()
            else:
                takes = set.intersection(*(set(reg[a].option_names()) for a in AUTO_ARCHES)) if chosen is None else (
                    set(reg[chosen].option_names()) if chosen in reg else set())
            options.update({k: v for k, v in legacy.items() if k in takes and k not in options})
        values["options"] = options
    if cls is TrainConfig:
        if "precision" not in data:  # written before --precision: fp32, or bf16 with "amp": true
            values["precision"] = "bf16" if data.get("amp") is True else "fp32"
        if "monitor_samples" not in data and "eval_samples" in data:  # before the cheaper monitor: every epoch in full
            values.setdefault("monitor_samples", data["eval_samples"])
            values.setdefault("monitor_images", None)
    return cls(**values)


__all__ += ["DataConfig"]
