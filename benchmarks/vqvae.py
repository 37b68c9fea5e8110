"""VQ-VAE against the Gaussian VAE, on MNIST and on 32x32 colour patches of scikit-image's photographs.

For each dataset, with the same minutes of training each (``--minutes``):

1. a VQ-VAE (``--arch vqvae --objective vqvae``), then its prior over the codes (``vaekit sample --sampler
   vq-prior``, ``--prior-minutes``), then ``vaekit eval`` on the first ``--limit`` test images: reconstruction
   MSE, codebook perplexity, and the bits/dim of the 8-bit images under the VQ-VAE with its prior;
2. a Gaussian VAE (``--arch conv``, K = ``--latent-dim``), then ``vaekit eval`` (``--k`` importance samples) on
   the same images: its 8-bit NLL (bits/dim, dequantized) and reconstruction MSE;
3. on MNIST also the two priors over the same codes, the gated PixelCNN and the transformer, each fitted for
   ``--prior-minutes``: their test NLL of the codes per CPU minute.

The colour set: every 32x32 patch on a 32-pixel grid of the colour photographs that the scikit-image wheel ships
in ``skimage/data`` (no download; ``pip install scikit-image``, or ``--photos DIR`` with those files), less the
near-constant ones (std < 2/255, the black border of retina.jpg); vaekit's seeded split holds out 10% for test.

Writes ``--out``/vqvae.json and the sample grids (``vqvae-<set>-*.png``); the last line printed is the
comparable figure: ``delta=`` the VQ-VAE's bits/dim with its prior minus the Gaussian VAE's 8-bit bits/dim, on
MNIST. Usage: ``python benchmarks/vqvae.py [--minutes 4] [--prior-minutes 3] [--sets mnist,photos]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaekit.codeprior import code_nll, fit_code_prior, make_code_prior
from vaekit.commands import eval_run, sample_run, train_run
from vaekit.config import DataConfig, ModelConfig, TrainConfig, cpu_flags
from vaekit.runfolder import RunFolder
from vaekit.samplers.vq_prior import encoder_codes

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
          "retina.jpg", "rocket.jpg")


def photo_folder(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the colour set needs scikit-image's photographs: pip install scikit-image, or pass --photos DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def photo_patches(folder: Path, out: Path, size: int = 32) -> tuple[Path, dict]:
    """Every size x size patch on a size-pixel grid of the colour photographs, less the near-constant ones, as .npy."""
    patches, per_photo = [], {}
    for name in PHOTOS:
        img = np.asarray(Image.open(folder / name).convert("RGB"))  # [H, W, 3] uint8
        h, w = (img.shape[0] // size) * size, (img.shape[1] // size) * size
        grid = img[:h, :w].reshape(h // size, size, w // size, size, 3).swapaxes(1, 2).reshape(-1, size, size, 3)
        keep = grid.reshape(len(grid), -1).std(axis=1) >= 2.0  # not near-constant (2/255)
        patches.append(grid[keep])
        per_photo[name] = int(keep.sum())
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.concatenate(patches))  # [N, 32, 32, 3]
    return out, per_photo


def train(dataset: str, out: Path, minutes: float, model: ModelConfig, objective: str, seed: int, reuse: dict | None = None) -> float:
    """Train for ``minutes`` of wall time; returns the seconds. ``reuse``: the earlier result of a run already in ``out``."""
    if reuse and (out / "model.safetensors").exists():
        return reuse["train_s"]
    t0 = time.perf_counter()
    cfg = TrainConfig(dataset=dataset, objective=objective, epochs=1000, time_budget=minutes, eval_samples=1,
                      monitor_images=1000, seed=seed, device="cpu")
    train_run(model, cfg, out, data_cfg=DataConfig(), overwrite=True, progress=False)
    return time.perf_counter() - t0


def vq_set(dataset: str, out: Path, args: argparse.Namespace) -> dict:
    """Train the VQ-VAE, fit its prior, evaluate."""
    model = ModelConfig(arch="vqvae", latent_dim=args.code_dim, codebook_size=args.codebook_size, num_filters=args.filters,
                        ema=args.ema)
    r = {"train_s": train(dataset, out, args.minutes, model, "vqvae", args.seed, args.previous.get("vqvae"))}
    t0 = time.perf_counter()
    budget = {"prior_epochs": args.prior_epochs} if args.prior_epochs else {"prior_minutes": args.prior_minutes, "prior_epochs": 1000}
    sample_run(out, n=64, sampler="vq-prior", options={"prior_net": args.prior_net, "prior_width": args.prior_width, **budget})
    r["prior_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = eval_run(out, k=1, limit=args.limit, progress=False)
    r["eval_s"] = time.perf_counter() - t0
    prior = json.loads((out / "vq_prior.json").read_text())
    r.update(mse=ev["recon_mse"], perplexity=ev["codebook_perplexity"], codes_used=ev["codes_used"],
             bits_per_dim=ev["vq_prior"]["bits_per_dim_8bit"], bits_per_dim_se=ev["vq_prior"]["bits_per_dim_8bit_se"],
             bits_per_dim_uniform=ev["vq_prior"]["bits_per_dim_8bit_uniform"], prior_nll=ev["vq_prior"]["prior_nll"],
             uniform_nll=ev["vq_prior"]["uniform_nll"], prior_steps=prior["fit"]["steps"], steps=RunFolder(out).metrics()[-1]["steps"])
    return r


def gaussian_set(dataset: str, out: Path, args: argparse.Namespace) -> dict:
    model = ModelConfig(arch="conv", latent_dim=args.latent_dim, posterior="diagonal")
    r = {"train_s": train(dataset, out, args.minutes, model, "elbo", args.seed, args.previous.get("gaussian"))}
    t0 = time.perf_counter()
    ev = eval_run(out, k=args.k, limit=args.limit, progress=False)
    r["eval_s"] = time.perf_counter() - t0
    r.update(mse=ev["recon_mse"], bits_per_dim=ev["bits_per_dim_8bit"], bits_per_dim_se=ev["bits_per_dim_8bit_se"],
             elbo=ev["elbo"], steps=RunFolder(out).metrics()[-1]["steps"], active_units=ev["active_units"])
    return r


def prior_comparison(out: Path, minutes: float, width: int) -> dict:
    """The gated PixelCNN and the transformer fitted to the same codes for the same minutes of this process's CPU time
    (``time.process_time``: fair on a machine other work loads too): test NLL (nats per image)."""
    run = RunFolder(out)
    model, data = run.load_model(), run.load_data()
    train_codes, test_codes = encoder_codes(model, run.images(data, "train")), encoder_codes(model, run.images(data, "test"))
    result = {}
    for kind in ("pixelcnn", "transformer"):
        torch.manual_seed(0)
        prior = make_code_prior(kind, model.codebook_size, model.grid, width=width, layers=6 if kind == "pixelcnn" else 4)
        wall = time.perf_counter()
        fit = fit_code_prior(prior, train_codes, epochs=1000, minutes=minutes, clock=time.process_time)
        wall = time.perf_counter() - wall
        nll = code_nll(prior, test_codes)
        result[kind] = {"test_nll": float(nll.mean()), "test_nll_se": float(nll.std() / math.sqrt(len(nll))), "steps": fit["steps"],
                        "cpu_seconds": fit["seconds"], "wall_seconds": wall, "parameters": sum(p.numel() for p in prior.parameters())}
        print(f"  {kind:12s} {result[kind]['test_nll']:.2f} +- {result[kind]['test_nll_se']:.2f} nats per image after "
              f"{fit['steps']} steps in {fit['seconds']:.0f} CPU s ({wall:.0f} s wall)", flush=True)
    return result


def machine() -> dict:
    name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    flags = cpu_flags() or set()
    return {"cpu": name, "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mnist,photos")
    p.add_argument("--minutes", type=float, default=4.0, help="training minutes of each model")
    p.add_argument("--prior-minutes", type=float, default=3.0)
    p.add_argument("--prior-net", default="pixelcnn")
    p.add_argument("--prior-epochs", type=int, default=None, help="fit the prior for this many epochs instead of --prior-minutes")
    p.add_argument("--reuse", action="store_true", help="keep the models already trained in --work (their results in --out/vqvae.json); "
                   "fit the prior and evaluate again")
    p.add_argument("--prior-width", type=int, default=32)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--codebook-size", type=int, default=128)
    p.add_argument("--filters", type=int, default=32)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--latent-dim", type=int, default=16, help="K of the Gaussian VAE")
    p.add_argument("--k", type=int, default=100, help="importance samples of the Gaussian VAE's 8-bit NLL")
    p.add_argument("--limit", type=int, default=1000, help="test images evaluated")
    p.add_argument("--compare-priors", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compare-only", action="store_true", help="only the priors' comparison, on the MNIST VQ-VAE already in --work")
    p.add_argument("--photos", default=None, help="folder of scikit-image's photographs (default: the installed skimage/data)")
    p.add_argument("--work", default="runs/bench-vqvae")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    results: dict = {"machine": machine(), "args": vars(args), "sets": {}}
    print(json.dumps(results["machine"]), flush=True)
    if args.compare_only:  # added to the results of an earlier run
        results = json.loads((out / "vqvae.json").read_text()) if (out / "vqvae.json").exists() else results
        print(f"mnist: the priors over the same codes, {args.prior_minutes} CPU minutes each", flush=True)
        results["sets"].setdefault("mnist", {})["priors"] = prior_comparison(work / "mnist-vqvae", args.prior_minutes, args.prior_width)
        results["sets"]["mnist"]["priors_machine"] = machine()
        (out / "vqvae.json").write_text(json.dumps(results, indent=2) + "\n")
        return
    earlier = json.loads((out / "vqvae.json").read_text()) if args.reuse and (out / "vqvae.json").exists() else {}
    results["sets"] = dict(earlier.get("sets") or {})  # --reuse: the other sets' results stay
    results.update({k: v for k, v in earlier.items() if k not in results})
    for name in args.sets.split(","):
        args.previous = (earlier.get("sets") or {}).get(name, {}) if args.reuse else {}
        for key in ("priors", "priors_machine"):  # the priors' comparison of an earlier run (--compare-only)
            if args.previous.get(key):
                results["sets"].setdefault(name, {})[key] = args.previous[key]
        dataset = "mnist"
        if name == "photos":
            path, per_photo = photo_patches(photo_folder(args.photos), work / "photos32.npy")
            dataset, results["photos"] = str(path), per_photo
        r: dict = {k: v for k, v in results["sets"].get(name, {}).items() if k in ("priors", "priors_machine")}
        r["args"] = {k: v for k, v in vars(args).items() if k != "previous"}
        print(f"{name}: VQ-VAE ...", flush=True)
        r["vqvae"] = vq_set(dataset, work / f"{name}-vqvae", args)
        if args.compare_priors and name == "mnist" and not r.get("priors"):
            print(f"{name}: the priors over the same codes, {args.prior_minutes} minutes each", flush=True)
            r["priors"] = prior_comparison(work / f"{name}-vqvae", args.prior_minutes, args.prior_width)
        print(f"{name}: Gaussian VAE ...", flush=True)
        r["gaussian"] = gaussian_set(dataset, work / f"{name}-gaussian", args)
        results["sets"][name] = r
        for src, dst in (("samples_vq_prior.png", "prior-samples"), ("reconstructions.png", "reconstructions")):
            shutil.copyfile(work / f"{name}-vqvae" / src, out / f"vqvae-{name}-{dst}.png")
        shutil.copyfile(work / f"{name}-gaussian" / "samples.png", out / f"vqvae-{name}-gaussian-samples.png")
        v, g = r["vqvae"], r["gaussian"]
        print(f"{name}: VQ-VAE mse {v['mse']:.5f} perplexity {v['perplexity']:.1f} ({v['codes_used']} codes) bits/dim "
              f"{v['bits_per_dim']:.4f} +- {v['bits_per_dim_se']:.4f} (uniform prior {v['bits_per_dim_uniform']:.4f}); Gaussian VAE "
              f"mse {g['mse']:.5f} 8-bit {g['bits_per_dim']:.4f} +- {g['bits_per_dim_se']:.4f}; wall {v['train_s'] + v['prior_s']:.0f} s "
              f"and {g['train_s']:.0f} s", flush=True)
        (out / "vqvae.json").write_text(json.dumps(results, indent=2) + "\n")
    s = results["sets"].get("mnist") or next(iter(results["sets"].values()))
    print(f"delta={s['vqvae']['bits_per_dim'] - s['gaussian']['bits_per_dim']:.4f}")


if __name__ == "__main__":
    main()
