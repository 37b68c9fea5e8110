"""The ``vaekit`` command: train, eval, sample, figures, report.

The flags of ``vaekit train`` are derived from ``ModelConfig`` and ``TrainConfig``:
one flag per field, checked against the field's metadata by argparse itself.
A preset fills in defaults; flags given on the command line override it.

Data-parallel training: ``torchrun --nproc-per-node N -m vaekit train ...`` (each process
joins the process group from torchrun's environment), or ``vaekit train --distributed``,
which re-launches the same command line through ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .registry import load_plugins

__all__ = ["main", "build_parser"]

UNTIL_BUDGET = 1000  # epochs when --time-budget is given without --epochs


# ----------------------------------------------------------------------------- config -> flags


def _checked(kind: type, meta: dict[str, Any]):
    """An argparse type that parses ``kind`` and enforces the field's bounds."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if "min" in meta and value < meta["min"]:
            raise argparse.ArgumentTypeError(f"must be >= {meta['min']}, got {text}")
        if "gt" in meta and not value > meta["gt"]:
            raise argparse.ArgumentTypeError(f"must be > {meta['gt']}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _flag_type(f: dataclasses.Field):
    from .config import field_kind

    kind = field_kind(f)
    return None if kind is bool else (_checked(kind, f.metadata) if kind is not str else str)


def _add_flag(group: Any, f: dataclasses.Field, help_text: str) -> None:
    flag = "--" + f.name.replace("_", "-")
    if _flag_type(f) is None:
        group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        choices = f.metadata.get("choices")
        group.add_argument(
            flag, dest=f.name, type=_flag_type(f), choices=list(choices) if choices is not None else None, default=None,
            metavar=None if choices is not None else f.name.upper(), help=help_text,
        )


def _choices_help(reg: Any) -> str:
    return "; ".join(cls.help() for _, cls in reg.items())


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per dataclass field, and for a config that chooses parts, one per option of its kinds' parts
    (``--hidden`` of the mlp architecture), each in a group of its kind. Every default is None so that we
    know what was given."""
    group = parser.add_argument_group(title)
    defaults = cls()
    parts = getattr(cls, "PARTS", {})
    for f in dataclasses.fields(cls):
        if f.name == "options":
            continue
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)})"
        if f.name in parts:
            help_text = f"{f.metadata.get('help', '')}: {_choices_help(parts[f.name])} (default: {getattr(defaults, f.name)})"
        _add_flag(group, f, help_text)
    for reg in parts.values():
        options = reg.option_fields()
        if not options:
            continue
        og = parser.add_argument_group(f"{reg.title} options (each applies to the {reg.kind} named before the colon)")
        for name, (f, owners) in options.items():
            per_part = []
            for owner in owners:
                of = next(x for x in dataclasses.fields(reg[owner].Options) if x.name == name)
                per_part.append(f"{owner}: {of.metadata.get('help', '')} (default: {of.default})")
            _add_flag(og, f, "; ".join(per_part))


def config_from_args(cls: type, args: argparse.Namespace, base: dict[str, Any] | None = None):
    """Defaults, then the preset (``base``), then the flags actually given.

    For a config that chooses parts, the options given as flags go to ``options``; a preset's
    options that the chosen part does not take are dropped (a flag's are refused by validation).
    """
    values = dict(base or {})
    given_options: dict[str, Any] = {}
    parts = getattr(cls, "PARTS", {})
    option_names = {n for reg in parts.values() for n in reg.option_fields()}
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None and f.name != "options":
            values[f.name] = given
    for name in sorted(option_names):
        given = getattr(args, name, None)
        if given is not None:
            given_options[name] = given
    preset_options = {k: values.pop(k) for k in list(values) if k in option_names}
    cfg = cls(**values)
    for field_name, reg in parts.items():
        chosen = getattr(cfg, field_name)
        if chosen is not None and chosen in reg:
            preset_options = {k: v for k, v in preset_options.items() if k not in reg.option_fields() or k in reg[chosen].option_names()}
    cfg.options = {**preset_options, **given_options}
    return cfg


# ----------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaekit", description="Train, sample and explain Variational Autoencoders on images.")
    parser.add_argument(
        "--plugin", action="append", default=None, metavar="FILE",
        help="a Python file that registers parts of its own (architectures, likelihoods, posteriors, priors, objectives, "
        "dataset formats, samplers, conditions); may be given more than once, and VAEKIT_PLUGINS lists more. A run records its plugin "
        "files and loads them again for eval, sample, figures and report",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _sample_parser(sub)
    _eval_parser(sub)
    _figures_parser(sub)
    _report_parser(sub)
    _data_parser(sub)
    return parser


def _train_parser(sub: Any) -> None:
    from .config import PRESETS, DataConfig, ModelConfig, TrainConfig

    p = sub.add_parser("train", help="train a VAE and write a run folder", description="Train a VAE and write a run folder.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="recipe whose values fill in the flags you do not give (default: quick)")
    p.add_argument(
        "--resume", type=Path, default=None, metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR from its checkpoint, with its saved config (only --device may be given too)",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder to write (default: runs/run-YYYYmmdd-HHMMSS)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it exists and is not empty")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument(
        "--distributed", action="store_true",
        help="train data-parallel on this machine: re-launch through torchrun (--standalone) with --nproc-per-node "
        "processes; --batch-size is per process. Ignored when already started by torchrun",
    )
    p.add_argument(
        "--nproc-per-node", type=_checked(int, {"min": 1}), default=None, metavar="N",
        help="processes for --distributed (default: the number of CUDA GPUs, or 2 without CUDA or with --device cpu)",
    )
    add_config_flags(p, ModelConfig, "model")
    add_config_flags(p, TrainConfig, "training")
    add_config_flags(p, DataConfig, "data (how --dataset is read)")


def _sample_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sample", help="draw new images from a trained run",
        description=(
            "Draw a grid of new images from a trained run: z from the prior N(0, I), or (--sampler gmm) from a Gaussian mixture "
            "fitted to the training set's posterior means (RUN_DIR/gmm.safetensors, gmm.json: held-out log-density), or "
            "(--sampler vq-prior, a VQ-VAE) from a prior fitted to its codes (RUN_DIR/vq_prior.safetensors, vq_prior.json: test NLL)."
        ),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--n", type=_checked(int, {"min": 1}), default=64, help="number of images (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    from .samplers import SAMPLERS

    p.add_argument("--sampler", choices=SAMPLERS.names(), default="prior",
                   help=f"where z comes from: {_choices_help(SAMPLERS)} (default: prior)")
    for f, owners in SAMPLERS.option_fields().values():
        _add_flag(p, f, "; ".join(f"{o}: {f.metadata.get('help', '')} (default: {f.default})" for o in owners))
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/samples_seedS.png; gmm: RUN_DIR/samples_gmm.png), "
                   "or FILE.npy: the images as a uint8 array [N, C, H, W] = round(255 * clamp(mean image, 0, 1)), for outside tools")
    p.add_argument("--label", default=None, metavar="NAME",
                   help="a conditional run (--condition label): draw this class, by name or number (e.g. 7); without it, every "
                   "class across rows with z shared down each column. A --condition quadrants run: a test image's number")


def _eval_parser(sub: Any) -> None:
    from .config import DEVICES

    p = sub.add_parser(
        "eval",
        help="evaluate a trained run: ELBO, log-likelihood, latent diagnostics",
        description=(
            "Evaluate a trained run on its dataset: the ELBO, the importance-sampled log-likelihood log p(x) "
            "with exactly K samples per image (nats per image and bits/dim, with standard errors), KL per latent "
            "dimension, active units and reconstruction MSE. Writes RUN_DIR/eval_SPLIT.json."
        ),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--k", type=_checked(int, {"min": 1}), default=1000, help="importance samples per image (default: 1000; 5000 for papers)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which images (default: test)")
    p.add_argument("--limit", type=_checked(int, {"min": 1}), default=None, metavar="N", help="only the first N images of the split (default: all)")
    p.add_argument("--samples", type=_checked(int, {"min": 1}), default=10, help="samples of z per image for the ELBO (default: 10)")
    p.add_argument("--batch-size", type=_checked(int, {"min": 1}), default=500, help="images per ELBO batch (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to evaluate (default: auto)")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default=None,
        help="the networks' arithmetic (default: the run's --precision, resolved for this device)",
    )
    p.add_argument(
        "--fuse", choices=("auto", "on", "off"), default="auto",
        help="compile the decoder and log p(x|z) together with torch.compile (CPU, fp32; vaekit.fusion): auto does for "
             "at least 10M decodes (images x K), where compiling's 10-45 s pays (default: auto)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_generate_flags(p)


def _add_generate_flags(p: argparse.ArgumentParser) -> None:
    """vaekit eval's sample-quality flags: --generate N, --sampler NAME and the samplers' options."""
    from .samplers import SAMPLERS

    g = p.add_argument_group(
        "sample quality (--generate N)",
        "measure N new images (seed --seed, drawn as vaekit sample --out FILE.npy draws them) against the test set in the "
        "features of a classifier trained on the dataset (FD-classifier, KID, precision, recall, density, coverage, label "
        "entropy; a fixed random network without labels); saved in the eval JSON and RUN_DIR/sample_quality.json",
    )
    g.add_argument("--generate", type=_checked(int, {"min": 6}), default=None, metavar="N",
                   help="images to generate and measure, e.g. 10000 (FD is biased at small N: compare at equal N)")
    g.add_argument("--sampler", choices=SAMPLERS.names(), default="prior",
                   help=f"where their z comes from: {_choices_help(SAMPLERS)} (default: prior)")
    added = []
    for name, (f, owners) in SAMPLERS.option_fields().items():
        try:
            _add_flag(g, f, "; ".join(f"{o}: {f.metadata.get('help', '')} (default: {f.default})" for o in owners))
            added.append(name)
        except argparse.ArgumentError:  # a sampler option named like one of eval's own flags: not settable here
            continue
    p.set_defaults(sampler_option_names=tuple(added))


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args.sampler`` given as eval's flags; a clear error naming an option it does not take."""
    from .samplers import SAMPLERS

    names = args.sampler_option_names
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    options = SAMPLERS.pick_options(args.sampler, given)
    if set(given) - set(options):
        SAMPLERS.options(args.sampler, given)  # raises, naming the option
    return options


def _figures_parser(sub: Any) -> None:
    p = sub.add_parser(
        "figures",
        help="write the math figures, and a run's figures",
        description=(
            "Write the figures that explain the math (MC-vs-exact KL error, rsample histograms). With RUN_DIR, "
            "also (re)draw the run's figures (ELBO curve, samples, reconstructions, latent map, latent scatter, "
            "interpolations) and its report, all into RUN_DIR."
        ),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", nargs="?", default=None, help="a trained run (optional)")
    p.add_argument("--out", type=Path, default=None, help="folder for the math figures (default: RUN_DIR, else figures)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write RUN_DIR/report.html, one self-contained page",
        description="Write RUN_DIR/report.html: config, data, device, time, metrics, evaluation and every figure, in one offline HTML file.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: RUN_DIR/report.html)")


def _data_parser(sub: Any) -> None:
    from .config import DataConfig

    p = sub.add_parser(
        "data",
        help="show what a dataset holds (imports image folders and array files into the cache), without training",
        description=(
            "Load a dataset as vaekit train --dataset would and print what was found: images per split, size, "
            "channels, classes, skipped files, and the cache's location and size. Image folders and .npy/.npz "
            "files are imported into the cache on first use."
        ),
    )
    p.add_argument("path", metavar="PATH", help="mnist, fashion-mnist, a folder (image files, or the four IDX files) or a .npy/.npz file")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    add_config_flags(p, DataConfig, "data")


# ----------------------------------------------------------------------------- commands


def default_nproc(device: str | None) -> int:
    """Processes for ``--distributed``: one per CUDA GPU, else 2 (CPU: each gets half the cores)."""
    import torch

    kind = (device or "auto").split(":")[0]
    if kind in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2


def relaunch_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command that runs ``vaekit <argv>`` on ``nproc`` processes of this machine.

    ``argv`` is passed unchanged: under torchrun, ``--distributed`` is ignored.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vaekit", *argv]


def _saved_device(run: Path) -> str:
    """The device in a run folder's config.json ("auto" if unreadable: resume reports that properly)."""
    try:
        device = json.loads((run / "config.json").read_text())["train"]["device"]
        return device if isinstance(device, str) else "auto"
    except (OSError, ValueError, KeyError, TypeError):
        return "auto"


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    if args.nproc_per_node is not None and not args.distributed:
        raise ValueError(f"--nproc-per-node {args.nproc_per_node} is only used with --distributed")
    device = args.device or (_saved_device(args.resume) if args.resume is not None else None)
    if args.distributed and not distributed.launched_by_torchrun():
        if (device or "").startswith("mps"):
            raise ValueError("--distributed cannot train on device 'mps' (torch.distributed has no MPS backend); use --device cpu or cuda")
        cmd = relaunch_command(args.argv, args.nproc_per_node or default_nproc(device))
        print(f"vaekit train: launching {' '.join(cmd[1:])}", flush=True)
        os.execv(cmd[0], cmd)  # the process becomes torchrun: signals and the exit status are its own
    with distributed.session(device or "auto"):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from . import distributed
    from .commands import train_run
    from .config import PRESETS, DataConfig, ModelConfig, TrainConfig, config_to_dict, validate
    from .train import TrainingInterrupted

    main = distributed.is_main()
    info = distributed.current()
    if args.resume is not None:
        overridable = {"device"}  # where to continue may change; what to train may not
        flags = [f.name for cls in (ModelConfig, TrainConfig, DataConfig) for f in dataclasses.fields(cls) if f.name != "options"]
        flags += [n for cls in (ModelConfig, TrainConfig) for reg in cls.PARTS.values() for n in reg.option_fields()]
        given = [f"--{name.replace('_', '-')}" for name in flags if getattr(args, name, None) is not None and name not in overridable]
        given += [flag for flag, value in (("--out", args.out), ("--preset", args.preset), ("--overwrite", args.overwrite or None)) if value is not None]
        if given:
            raise ValueError(f"--resume continues a run with its saved config; it cannot be combined with {', '.join(given)}")
        out = args.resume
        if main:
            print(f"vaekit train: resuming {out}", flush=True)
        model_cfg = train_cfg = data_cfg = None
    else:
        preset = args.preset or "quick"
        if args.amp and main:
            print("note: --amp is deprecated and means --precision bf16; use --precision auto|fp32|bf16", flush=True)
        model_cfg = config_from_args(ModelConfig, args)
        train_cfg = config_from_args(TrainConfig, args, PRESETS[preset])
        data_cfg = config_from_args(DataConfig, args)
        validate(model_cfg)  # the chosen parts' options, before anything is loaded
        validate(train_cfg)
        if train_cfg.time_budget is not None and args.epochs is None:
            train_cfg.epochs = UNTIL_BUDGET  # the budget decides when to stop
        out = args.out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
        if main:
            where = f"; {info.world_size} processes ({info.backend}), global batch {train_cfg.batch_size * info.world_size}" if info else ""
            print(f"vaekit train: preset {preset}, {json.dumps(config_to_dict(train_cfg))}{where}", flush=True)
    t0 = time.perf_counter()
    try:
        run = train_run(
            model_cfg, train_cfg, out, data_cfg=data_cfg, overwrite=args.overwrite, progress=args.progress,
            resume=args.resume is not None, device=args.device,
        )
    except TrainingInterrupted as e:
        if main:
            how = f"torchrun --nproc-per-node={info.world_size} -m vaekit train --resume {out}" if info else f"vaekit train --resume {out}"
            print(f"vaekit train: interrupted ({e}); checkpoint saved. Resume with: {how}", file=sys.stderr, flush=True)
        try:  # leave together: torchrun stops the other ranks as soon as one exits with an error
            distributed.barrier()
        except RuntimeError:
            pass
        return 128 + int(e.signum)
    if not main:
        return 0
    last = _last_metrics(run)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    if last:
        sigma = f", sigma_x {last['sigma_x']:.4f}" if last.get("sigma_x") is not None else ""
        se = last.get("test_elbo_se")
        pm = f" +- {se:.1f}" if isinstance(se, (int, float)) and math.isfinite(se) else ""  # no SE from one test image
        print(f"epoch {last['epoch']}: test ELBO {last['test_elbo']:.1f}{pm} nats per image, train ELBO {last['train_elbo']:.1f}{sigma}")
    print(f"run folder: {run.resolve()}")
    for name in sorted(p.name for p in run.iterdir() if not p.name.startswith(".")):
        print(f"  {name}")
    return 0


def _last_metrics(run: Path) -> dict[str, Any] | None:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    try:
        last = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return last if isinstance(last, dict) and {"epoch", "test_elbo", "test_elbo_se", "train_elbo"} <= set(last) else None


def cmd_sample(args: argparse.Namespace) -> int:
    from .commands import sample_run
    from .samplers import SAMPLERS

    given = {name: getattr(args, name) for name in SAMPLERS.option_fields() if getattr(args, name, None) is not None}
    options = SAMPLERS.pick_options(args.sampler, given)
    if set(given) - set(options):
        SAMPLERS.options(args.sampler, given)  # a clear error naming the option the sampler does not take
    path = sample_run(args.run_dir, n=args.n, seed=args.seed, out=args.out, sampler=args.sampler, options=options, label=args.label)
    if args.sampler == "gmm":
        from .checkpoint import read_json

        g = read_json(Path(args.run_dir) / "gmm.json")
        print(f"GMM of {g['components']} components fit on {g['train_points']} training posterior means "
              f"({g['iterations']} EM iterations{'' if g['converged'] else ', not converged'})")
        print(f"held-out log-density of the {g['test_points']} test posterior means, nats per point:")
        print(f"  GMM        {g['test_loglik_gmm']:10.4f}")
        print(f"  N(0, I)    {g['test_loglik_prior']:10.4f}")
        print(f"  gain       {g['test_loglik_gmm'] - g['test_loglik_prior']:+10.4f}")
        print(f"wrote {Path(args.run_dir) / 'gmm.safetensors'}, {Path(args.run_dir) / 'gmm.json'}")
    if args.sampler == "vq-prior":
        _print_vq_prior(Path(args.run_dir))
    if path.suffix.lower() == ".npy":
        import numpy as np

        from .generated import QUANTIZATION

        count = np.load(path, mmap_mode="r").shape[0]  # a conditional run without --label: every class x (n // classes)
        print(f"{count} images from the {args.sampler} sampler (seed {args.seed}) as {QUANTIZATION}")
    print(f"wrote {path}")
    return 0


def _print_vq_prior(run: Path) -> None:
    from .checkpoint import read_json

    g = read_json(run / "vq_prior.json")
    s, fit = g["settings"], g["fit"]
    print(f"{s['prior_net']} prior over the {s['grid'][0]}x{s['grid'][1]} codes fit on the codes of {g['train_images']} training images "
          f"({fit['steps']} steps, {fit['epochs']} epochs, {fit['seconds']:.0f} s)")
    print(f"test images' codes: {g['prior_nll']:.2f} +- {g['prior_nll_se']:.2f} nats per image ({g['prior_bits_per_code']:.3f} bits per code), "
          f"uniform prior {g['uniform_nll']:.2f}")
    print(f"bits/dim of the {g['test_images']} test images (8-bit) under the VQ-VAE with this prior: "
          f"{g['bits_per_dim_8bit']:.4f} +- {g['bits_per_dim_8bit_se']:.4f} (uniform prior: {g['bits_per_dim_8bit_uniform']:.4f})")
    print(f"wrote {run / 'vq_prior.safetensors'}, {run / 'vq_prior.json'}")


def _vq_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """A VQ-VAE's lines of ``vaekit eval``: codebook use, and the bits/dim under its fitted code prior."""
    rows = []
    if "codebook_perplexity" in r:
        rows.append(("codebook", f"perplexity {r['codebook_perplexity']:.1f}, {r['codes_used']} of {r['codebook_size']} codes used "
                     f"(code grid {'x'.join(map(str, r['code_grid']))})"))
    v = r.get("vq_prior")
    if v:
        rows.append((f"with {v['prior_net']} prior", f"{v['bits_per_dim_8bit']:10.4f} +- {v['bits_per_dim_8bit_se']:.4f} bits/dim "
                     f"(8-bit; codes {v['prior_nll']:.2f} nats per image, uniform {v['uniform_nll']:.2f})"))
    elif "codebook_perplexity" in r:
        rows.append(("with a code prior", "not fitted yet: vaekit sample RUN_DIR --sampler vq-prior, then eval again"))
    return rows


def cmd_eval(args: argparse.Namespace) -> int:
    from .commands import eval_run

    generate = {} if args.generate is None else {"generate": args.generate, "sampler": args.sampler, "sampler_options": _sampler_options(args)}
    if args.generate is None and (args.sampler != "prior" or _sampler_options(args)):
        raise ValueError("--sampler and its options choose the images of --generate N; give --generate too")
    r = eval_run(
        args.run_dir, k=args.k, split=args.split, limit=args.limit, n_samples=args.samples,
        batch_size=args.batch_size, seed=args.seed, device=args.device, progress=args.progress, precision=args.precision,
        fuse={"auto": None, "on": True, "off": False}[args.fuse], **generate,
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    kl = ", ".join(f"{v:.2f}" for v in r.get("kl_per_dim", []))
    print(f"{r['split']} split, {r['n_images']} images of {r['dims']} pixels, on {r['device']} ({r['precision']}) in {r['seconds']:.0f} s")
    rows = [
        (f"ELBO ({r['n_samples']} samples)", f"{r['elbo']:10.2f} +- {r['elbo_se']:.2f} nats per image (rec {r['rec']:.2f}, KL {r['kl']:.2f})"),
        (f"{r.get('condition', {}).get('quantity', 'log p(x)')} (k={r['k']})", f"{r['log_likelihood']:10.2f} +- {r['log_likelihood_se']:.2f} nats per image"),
        ("", f"{r['bits_per_dim']:10.4f} +- {r['bits_per_dim_se']:.4f} bits/dim (= -log p / (D ln 2), D = {r['dims']} pixels scored)"),
        *(
            [("8-bit NLL", f"{r['bits_per_dim_8bit']:10.4f} +- {r['bits_per_dim_8bit_se']:.4f} bits/dim (dequantized upper bound)")]
            if "bits_per_dim_8bit" in r else []
        ),
        *([("KL per latent dim", f"[{kl}] nats"),
           ("active units", f"{r['active_units']} of {len(r['kl_per_dim'])} (Var_x E[z_u|x] > {r['active_threshold']})"
            + (f"; per layer, bottom first: {'+'.join(map(str, r['active_units_per_layer']))}" if len(r.get("active_units_per_layer", [])) > 1 else ""))]
          if "kl_per_dim" in r else []),
        ("reconstruction MSE", f"{r['recon_mse']:.5f} per pixel"),
        *_vq_rows(r),
    ]
    for label, value in rows:
        print(f"  {label:<22}{value}")
    machine = "GPU" if r["device"].startswith("cuda") else "machine"
    peak = f" (this {machine}'s {r['precision']} matmul rate: {r['matmul_peak_gflops']:.0f} GFLOP/s)" if "matmul_peak_gflops" in r else ""
    print(f"  {'speed':<22}{r['decodes_per_s']:,.0f} decodes/s in {r['log_likelihood_seconds']:.0f} s, decoder at {r['decoder_gflops']:.1f} GFLOP/s{peak}"
          + (", fused" if r.get("fused") else ""))
    print(f"note: {r['note']}")
    if "dequantization_note" in r:
        print(f"note: {r['dequantization_note']}")
    if "sample_quality" in r:
        _print_sample_quality(r["sample_quality"], Path(args.run_dir))
    print(f"wrote {Path(args.run_dir) / ('eval_' + r['split'] + '.json')}")
    return 0


def _print_sample_quality(entry: dict[str, Any], run_dir: Path) -> None:
    from .commands.quality import QUALITY_FILE, describe_entry

    lines = describe_entry(entry).splitlines()
    print(lines[0])
    for line in lines[1:]:
        print(f"  {line}")
    print("note: these figures compare only within vaekit, on the same features and at the same N; they are not FID")
    print(f"wrote {run_dir / QUALITY_FILE}")


def cmd_report(args: argparse.Namespace) -> int:
    from .commands import report_run

    print(f"wrote {report_run(args.run_dir, args.out)}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    import torch

    from .distributions import rsample
    from .evaluation import kl_mc_error
    from .plots import plot_kl_error, plot_rsample_hist

    if args.run_dir is not None and not args.run_dir.is_dir():
        raise ValueError(f"RUN_DIR {args.run_dir} does not exist or is not a folder")
    out: Path = args.out or args.run_dir or Path("figures")
    out.mkdir(parents=True, exist_ok=True)
    curve = kl_mc_error([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000], repeats=10, seed=args.seed)
    plot_kl_error(curve, out / "kl_mc_vs_exact.png")
    mu, sigma = (1.0, -2.0), 0.5
    params = torch.tensor([[mu[0], mu[1], torch.tensor(sigma).log().item()]], dtype=torch.float64)  # [1, K+1]
    torch.manual_seed(args.seed)
    samples = rsample(params, 20_000)[0]  # [M, K]
    plot_rsample_hist(samples, mu, sigma, out / "rsample_hist.png")
    for name in ("kl_mc_vs_exact.png", "rsample_hist.png"):
        print(f"wrote {out / name}")
    if args.run_dir is not None:  # after the math figures, so that the report shows them too
        from .commands import figures_run

        for path in figures_run(args.run_dir):
            print(f"wrote {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .config import DataConfig
    from .data import cache_size, load_dataset

    data = load_dataset(args.path, config=config_from_args(DataConfig, args), progress=args.progress)
    info = data.info
    split = info.split
    if split == "seeded":
        split = f"seeded (test fraction {info.test_fraction}, seed {info.split_seed})"
    h, w = data.train_uint8.shape[-2:]
    c = int(data.train_uint8.shape[1])
    rules = [f" ({rule})" if rule else "" for rule in (info.image_size_rule, info.channels_rule)]
    classes = info.classes
    if classes:
        shown = ", ".join(classes[:20]) + (f", ... ({len(classes) - 20} more)" if len(classes) > 20 else "")
        classes_line = f"{len(classes)}: {shown}"
    elif info.labelled:
        labels = data.train_labels
        classes_line = f"labels {int(labels.min())}..{int(labels.max())} (numbers, no names)" if len(labels) else "none"
    else:
        classes_line = "none (no class folders: every label is -1)"
    skipped = info.skipped_files or []
    print(f"vaekit data: {args.path}")
    print(f"  {'format':<9}{info.source or '?'}, split {split}")
    print(f"  {'train':<9}{len(data.train_uint8)} images")
    print(f"  {'test':<9}{len(data.test_uint8)} images")
    print(f"  {'size':<9}{w}x{h}{rules[0]}, {c} channel{'s' * (c > 1)}{rules[1]}")
    print(f"  {'classes':<9}{classes_line}")
    print(f"  {'skipped':<9}{len(skipped)} file{'s' * (len(skipped) != 1)}" + (" (bad images)" if skipped else ""))
    for line in skipped[:10]:
        print(f"             {line}")
    if len(skipped) > 10:
        print(f"             ... and {len(skipped) - 10} more")
    if info.cache:
        size = info.cache_bytes if info.cache_bytes is not None else cache_size(info.cache)
        status = info.cache_status
        seconds = f" in {info.import_seconds:.1f} s" if status != "reused" and info.import_seconds is not None else ""
        how = f"; {status}{seconds}" if status else ""
        amount = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
        print(f"  {'cache':<9}{info.cache} ({amount}{how})")
    else:
        print(f"  {'cache':<9}none (read directly)")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "figures": cmd_figures, "report": cmd_report, "data": cmd_data}


def take_plugins(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the files of every ``--plugin FILE`` / ``--plugin=FILE`` in ``argv``, the other arguments)."""
    plugins, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--plugin" and i + 1 < len(argv):
            plugins.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            plugins.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return plugins, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins, rest = take_plugins(argv)
    try:  # before the parser is built: the plugins' parts are choices and their options flags
        load_plugins(plugins)
    except ValueError as e:
        print(f"vaekit: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(rest)
    args.argv = argv
    from .checkpoint import CheckpointError
    from .distributed import RankFailed
    from .train import NonFiniteError

    # under torchrun every rank runs this; errors that all ranks share are told by rank 0 only
    rank = os.environ.get("RANK", "0")
    prefix = f"vaekit {args.command}: " if rank == "0" else f"vaekit {args.command} [rank {rank}]: "
    try:
        return COMMANDS[args.command](args)
    except NonFiniteError as e:
        if rank == "0":
            print(f"{prefix}error: {e}", file=sys.stderr)
        return 1
    except RankFailed:
        return 2  # rank 0 tells what went wrong
    except (ValueError, FileExistsError, CheckpointError, OSError) as e:
        # DatasetError and CheckpointError are ValueErrors: one clear line, no traceback
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(f"{prefix}error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
